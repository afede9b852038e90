/**
 * A small seeded PRNG (mulberry32), so a soak run's plan and its fault decisions are
 * reproducible from its seed. Not for anything but test workloads.
 */
export class Random {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** An integer in [min, max]. */
  between(min: number, max: number): number {
    return min + this.int(max - min + 1);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    const item = items[this.int(items.length)];
    if (item === undefined) throw new Error("pick from an empty list");
    return item;
  }

  /** `count` distinct integers of [0, n), in random order (all of them when count >= n). */
  distinct(n: number, count: number): number[] {
    const all = Array.from({ length: n }, (_, i) => i);
    for (let i = all.length - 1; i > 0; i -= 1) {
      const j = this.int(i + 1);
      [all[i], all[j]] = [all[j] ?? 0, all[i] ?? 0];
    }
    return all.slice(0, Math.min(count, n));
  }
}

/** A 32-bit seed derived from `parts` (FNV-1a): one independent stream per named decision. */
function seedOf(...parts: readonly (string | number)[]): number {
  let hash = 0x811c9dc5;
  for (const char of parts.join("\u0000")) {
    hash ^= char.codePointAt(0) ?? 0;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

/** A stream of its own for one named decision. */
export function randomFor(...parts: readonly (string | number)[]): Random {
  return new Random(seedOf(...parts));
}
