import { STALL_PAUSE_MS, VerificationGate, VerificationTimeout } from "../../src/auth/token-checks";

/** A verification that ends when the test says. */
function pending<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve: (value: T) => void = () => undefined;
  const promise = new Promise<T>((settle) => { resolve = settle; });
  return { promise, resolve };
}

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
    const gate = new VerificationGate({ timeoutMs: 20 });
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
    const gate = new VerificationGate({ timeoutMs: 20, clock: () => now });
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

  it("lets every verification through again once a try after the pause has its verdict", async () => {
    let now = 1_000_000;
    const gate = new VerificationGate({ timeoutMs: 20, clock: () => now });
    await expect(gate.run(verification("first", silent))).rejects.toBeInstanceOf(VerificationTimeout);
    now += STALL_PAUSE_MS;
    await expect(gate.run(verification("try", () => Promise.resolve("verdict")))).resolves.toBe("verdict");
    await expect(gate.run(verification("next", () => Promise.resolve("verdict")))).resolves.toBe("verdict");
    expect(started).toEqual(["first", "try", "next"]);
  });

  it("pauses nothing after a verification that fails before its deadline (keys out of reach)", async () => {
    const gate = new VerificationGate({ timeoutMs: 20 });
    await expect(gate.run(verification("refused", () => Promise.reject(new Error("connect ECONNREFUSED"))))).rejects.toThrow("ECONNREFUSED");
    await expect(gate.run(verification("next", () => Promise.resolve("verdict")))).resolves.toBe("verdict");
    expect(started).toEqual(["refused", "next"]);
  });
});
