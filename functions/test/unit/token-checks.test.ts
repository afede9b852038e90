import { STALL_PAUSE_MS, VerificationGate, VerificationTimeout } from "../../src/auth/token-checks";

/** A verification that ends when the test says. */
function pending<T>(): { promise: Promise<T>; resolve: (value: T) => void; reject: (error: Error) => void } {
  let resolve: (value: T) => void = () => undefined;
  let reject: (error: Error) => void = () => undefined;
  const promise = new Promise<T>((settle, fail) => { resolve = settle; reject = fail; });
  return { promise, resolve, reject };
}

/** firebase-admin's refusal of a token on what it carries (another project's audience): a verdict on the token. */
class Refused extends Error {}
const isRefusal = (error: unknown) => error instanceof Refused;

/** A verification Google never answers. */
const silent = () => new Promise<string>(() => undefined);

describe("VerificationGate", () => {
  const started: string[] = [];
  const verification = (name: string, result: () => Promise<string>) => () => {
    started.push(name);
    return result();
  };

  beforeEach(() => {
    started.length = 0;
  });

  it("refuses at once, starting nothing, while a verification left at its deadline runs, and lets the next one through once it ends", async () => {
    const gate = new VerificationGate(isRefusal, { timeoutMs: 20 });
    const first = pending<string>();
    await expect(gate.run(verification("first", () => first.promise))).rejects.toMatchObject({ name: "VerificationTimeout", code: "timeout" });
    await expect(gate.run(verification("second", () => Promise.resolve("verdict")))).rejects.toBeInstanceOf(VerificationTimeout);
    expect(started).toEqual(["first"]);
    first.resolve("late verdict");
    await first.promise;
    await expect(gate.run(verification("third", () => Promise.resolve("verdict")))).resolves.toBe("verdict");
    expect(started).toEqual(["first", "third"]);
  });

  it("lets one verification try again once the pause has passed, refusing the others while it runs, and pauses again when it is left at its deadline too", async () => {
    let now = 1_000_000;
    const gate = new VerificationGate(isRefusal, { timeoutMs: 20, clock: () => now });
    await expect(gate.run(verification("first", silent))).rejects.toBeInstanceOf(VerificationTimeout);
    now += STALL_PAUSE_MS - 1;
    await expect(gate.run(verification("early", silent))).rejects.toBeInstanceOf(VerificationTimeout);
    now += 1;
    const trying = gate.run(verification("try", silent));
    await expect(gate.run(verification("beside the try", silent))).rejects.toBeInstanceOf(VerificationTimeout);
    await expect(trying).rejects.toMatchObject({ code: "timeout" });
    now += STALL_PAUSE_MS - 1;
    await expect(gate.run(verification("within the new pause", silent))).rejects.toBeInstanceOf(VerificationTimeout);
    expect(started).toEqual(["first", "try"]);
  });

  it("lets every verification through again once a try after the pause succeeds", async () => {
    let now = 1_000_000;
    const gate = new VerificationGate(isRefusal, { timeoutMs: 20, clock: () => now });
    await expect(gate.run(verification("first", silent))).rejects.toBeInstanceOf(VerificationTimeout);
    now += STALL_PAUSE_MS;
    await expect(gate.run(verification("try", () => Promise.resolve("verdict")))).resolves.toBe("verdict");
    await expect(gate.run(verification("next", () => Promise.resolve("verdict")))).resolves.toBe("verdict");
    expect(started).toEqual(["first", "try", "next"]);
  });

  it("lets the next verification try once the try after a pause is refused on its token, refusing the others while that one runs", async () => {
    let now = 1_000_000;
    const gate = new VerificationGate(isRefusal, { timeoutMs: 20, clock: () => now });
    await expect(gate.run(verification("first", silent))).rejects.toBeInstanceOf(VerificationTimeout);
    now += STALL_PAUSE_MS;
    // Refused before any call to Google: nothing was learnt of Google, so the pause stays.
    await expect(gate.run(verification("another project's", () => Promise.reject(new Refused("incorrect aud"))))).rejects.toBeInstanceOf(Refused);
    const trying = gate.run(verification("try", silent));
    const beside = await Promise.allSettled(Array.from({ length: 10 }, (_, index) => gate.run(verification(`beside the try ${index}`, silent))));
    expect(beside.map((outcome) => outcome.status === "rejected" && outcome.reason instanceof VerificationTimeout)).toEqual(Array.from({ length: 10 }, () => true));
    await expect(trying).rejects.toMatchObject({ code: "timeout" });
    await expect(gate.run(verification("within the new pause", silent))).rejects.toBeInstanceOf(VerificationTimeout);
    expect(started).toEqual(["first", "another project's", "try"]);
  });

  it("lets one verification try at once when the one left at its deadline ends in a verdict on its token, the others refused while it runs", async () => {
    const gate = new VerificationGate(isRefusal, { timeoutMs: 20 });
    const first = pending<string>();
    await expect(gate.run(verification("first", () => first.promise))).rejects.toBeInstanceOf(VerificationTimeout);
    first.reject(new Refused("invalid signature"));
    await first.promise.catch(() => undefined);
    const second = pending<string>();
    const trying = gate.run(verification("try", () => second.promise));
    await expect(gate.run(verification("beside the try", silent))).rejects.toBeInstanceOf(VerificationTimeout);
    second.resolve("verdict");
    await expect(trying).resolves.toBe("verdict");
    await expect(gate.run(verification("next", () => Promise.resolve("verdict")))).resolves.toBe("verdict");
    expect(started).toEqual(["first", "try", "next"]);
  });

  it("pauses nothing at a deadline once a verification started after the one left there has succeeded (one stuck call among answered ones)", async () => {
    const gate = new VerificationGate(isRefusal, { timeoutMs: 20 });
    const stuck = gate.run(verification("stuck", silent));
    await expect(gate.run(verification("answered", () => Promise.resolve("verdict")))).resolves.toBe("verdict");
    await expect(stuck).rejects.toBeInstanceOf(VerificationTimeout);
    await expect(gate.run(verification("next", () => Promise.resolve("verdict")))).resolves.toBe("verdict");
    expect(started).toEqual(["stuck", "answered", "next"]);
  });

  it("pauses nothing at the deadlines of several stuck verifications when one started before the last of them succeeds after it started", async () => {
    const gate = new VerificationGate(isRefusal, { timeoutMs: 20 });
    const answered = pending<string>();
    const first = gate.run(verification("first stuck", silent));
    const middle = gate.run(verification("answered", () => answered.promise));
    const last = gate.run(verification("last stuck", silent));
    answered.resolve("verdict");
    await expect(middle).resolves.toBe("verdict");
    await expect(first).rejects.toBeInstanceOf(VerificationTimeout);
    await expect(last).rejects.toBeInstanceOf(VerificationTimeout);
    await expect(gate.run(verification("next", () => Promise.resolve("verdict")))).resolves.toBe("verdict");
    expect(started).toEqual(["first stuck", "answered", "last stuck", "next"]);
  });

  it("lifts the pause when any verification still running succeeds, not only the one it waits on", async () => {
    const gate = new VerificationGate(isRefusal, { timeoutMs: 20 });
    const first = pending<string>();
    const leftFirst = gate.run(verification("first", () => first.promise));
    const leftLast = gate.run(verification("last", silent));
    await expect(leftFirst).rejects.toBeInstanceOf(VerificationTimeout);
    await expect(leftLast).rejects.toBeInstanceOf(VerificationTimeout);
    await expect(gate.run(verification("paused", silent))).rejects.toBeInstanceOf(VerificationTimeout);
    first.resolve("late verdict");
    await first.promise;
    await expect(gate.run(verification("next", () => Promise.resolve("verdict")))).resolves.toBe("verdict");
    expect(started).toEqual(["first", "last", "next"]);
  });

  it("keeps one try at a time when a verification started before the pause is refused on its token while the try runs", async () => {
    let now = 1_000_000;
    const gate = new VerificationGate(isRefusal, { timeoutMs: 20, clock: () => now });
    const early = pending<string>();
    const leftEarly = gate.run(verification("early", () => early.promise));
    const leftStuck = gate.run(verification("stuck", silent));
    await expect(leftEarly).rejects.toBeInstanceOf(VerificationTimeout);
    await expect(leftStuck).rejects.toBeInstanceOf(VerificationTimeout);
    now += STALL_PAUSE_MS;
    const trying = gate.run(verification("try", silent));
    early.reject(new Refused("invalid signature"));
    await early.promise.catch(() => undefined);
    await expect(gate.run(verification("beside the try", silent))).rejects.toBeInstanceOf(VerificationTimeout);
    await expect(trying).rejects.toMatchObject({ code: "timeout" });
    expect(started).toEqual(["early", "stuck", "try"]);
  });

  it("pauses nothing after a verification that fails before its deadline (keys out of reach)", async () => {
    const gate = new VerificationGate(isRefusal, { timeoutMs: 20 });
    await expect(gate.run(verification("refused", () => Promise.reject(new Error("connect ECONNREFUSED"))))).rejects.toThrow("ECONNREFUSED");
    await expect(gate.run(verification("next", () => Promise.resolve("verdict")))).resolves.toBe("verdict");
    expect(started).toEqual(["refused", "next"]);
  });
});
