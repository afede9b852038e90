/** `describe` when nothing stands in the way (`reason` undefined), else a skipped `describe` that says why, in the run's output and in its name. */
export function describeUnless(reason: string | undefined, name: string, body: () => void): void {
  if (reason === undefined) {
    describe(name, body);
    return;
  }
  console.warn(`SKIPPED "${name}": ${reason}`);
  describe.skip(`${name} [skipped: ${reason}]`, body);
}
