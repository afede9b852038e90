import { PartialWriter } from "../../src/session/message/partial-writer";
import type { PartialReply } from "../../src/store/records";

/** A writer on a hand-driven monotonic clock, recording what it writes. */
function setup() {
  const writes: (PartialReply | null)[] = [];
  const time = { now: 0 };
  const writer = new PartialWriter((partial) => writes.push(partial), 3, () => 1_000 + time.now, 250, () => time.now);
  return { writes, time, writer };
}

describe("PartialWriter", () => {
  beforeEach(() => { jest.useFakeTimers(); });
  afterEach(() => { jest.useRealTimers(); });

  it("writes the first piece at once, then the whole text so far at most once per interval", () => {
    const { writes, time, writer } = setup();
    writer.write("Hel");
    expect(writes).toEqual([{ text: "Hel", seq_after: 3, updated_at: 1_000 }]);
    time.now = 100;
    writer.write("lo");
    writer.write(" there");
    expect(writes).toHaveLength(1);
    time.now = 250;
    jest.advanceTimersByTime(150);
    expect(writes).toEqual([{ text: "Hel", seq_after: 3, updated_at: 1_000 }, { text: "Hello there", seq_after: 3, updated_at: 1_250 }]);
    expect(writer.written).toBe(true);
  });

  it("doubles the wait after each write up to its most: a 5 s reply costs 4 writes, then one per most", () => {
    const writes: number[] = [];
    // The fake timers' own clock, so that a timer sees the time it fires at.
    const started = jest.now();
    const now = () => jest.now() - started;
    const writer = new PartialWriter(() => writes.push(now()), 0, now, 2_000, now);
    // A piece every 50 ms for 8 s.
    while (now() < 8_000) {
      writer.write("x");
      jest.advanceTimersByTime(50);
    }
    expect(writes.filter((at) => at < 5_000)).toEqual([0, 500, 1_500, 3_500]);
    expect(writes.filter((at) => at >= 5_000)).toEqual([5_500, 7_500]);
  });

  it("writes nothing once stopped, and discards by removing what it wrote", () => {
    const { writes, time, writer } = setup();
    writer.write("a");
    time.now = 10;
    writer.write("b");
    writer.stop();
    jest.advanceTimersByTime(1_000);
    expect(writes).toEqual([{ text: "a", seq_after: 3, updated_at: 1_000 }]);
    writer.discard();
    expect(writes.at(-1)).toBeNull();
    expect(writer.written).toBe(false);
  });

  it("removes nothing when nothing was written, and starts over after a restart", () => {
    const { writes, time, writer } = setup();
    writer.discard();
    expect(writes).toEqual([]);
    const other = setup();
    other.writer.write("first try");
    // The stored partial is simply overwritten: it can always be taken back.
    expect(other.writer.restart()).toBe(true);
    other.time.now = 300;
    other.writer.write("second");
    expect(other.writes.map((partial) => partial?.text)).toEqual(["first try", "second"]);
    expect(time.now).toBe(0);
  });
});
