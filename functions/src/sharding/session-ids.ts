import { randomBytes, randomUUID } from "node:crypto";

/*
 * Session ids say which database instance holds their session, so that every request finds it
 * from the id alone, with no lookup. Ids issued before sharding (and every id of a deployment
 * with one instance) are random UUIDs v4: those are on the first instance. With more than one,
 * new ids are UUIDs v8 (RFC 9562: the version nibble 8, the variant bits 10, the other 122 bits
 * the issuer's) whose first byte is the instance's position in DATABASE_INSTANCES and the other
 * 114 bits random. A v4 id cannot carry a position (its bits are all random), hence the version.
 */

const V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const V8 = /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** Positions one byte can carry: the most instances DATABASE_INSTANCES may list. */
export const MAX_INSTANCES = 256;

/** Random bits of an id issued for a position (128 less the version's 4, the variant's 2, the position's 8). */
export const RANDOM_BITS_PLACED = 114;

/** Whether `value` is an id this service issues (v4 or v8, lower case). Anything else cannot name a session. */
export function isIssuedSessionId(value: string): boolean {
  return V4.test(value) || V8.test(value);
}

/** The position of the instance holding session `id`: the first byte of a v8 id; 0 for any other id. */
export function instancePositionOf(id: string): number {
  return V8.test(id) ? Number.parseInt(id.slice(0, 2), 16) : 0;
}

/** A new id for a session on the instance at `position`: v4 for a deployment of one instance (as before sharding), else v8. */
export function placedSessionId(position: number, instances: number): string {
  if (!Number.isSafeInteger(position) || position < 0 || position >= instances || instances > MAX_INSTANCES) throw new Error(`no instance at position ${position} of ${instances}`);
  if (instances === 1) return randomUUID();
  const bytes = randomBytes(16);
  bytes[0] = position;
  bytes[6] = 0x80 | ((bytes[6] ?? 0) & 0x0f);
  bytes[8] = 0x80 | ((bytes[8] ?? 0) & 0x3f);
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Ids for new sessions, each taking its instance's turn; a turn given back is taken again first. */
export interface SessionPlacement {
  /** An id on the instance whose turn it is. */
  readonly next: () => string;
  /** Gives back the turn of an id from `next` that no session will have. */
  readonly giveBack: (id: string) => void;
}

/**
 * Where this function instance places new sessions: round robin over the instances, from a
 * random start, so that each function instance spreads its own sessions evenly (exactly, over
 * any multiple of the count) and function instances started together do not all begin on the
 * same database. No shared counter: placing costs no round trip. A create draws its id before it
 * knows whether a session will have it (a keyed create's claim needs one): a discarded id's turn
 * is given back, or creates that are refused or repeated would steer where the sessions go (each
 * keyed create sent twice put every session on one of two instances). Given-back turns are taken
 * again first, in the order given back, so the ids in use stay even while creates run concurrently.
 */
export function sessionPlacement(instances: number, start: number = randomBytes(1)[0] ?? 0): SessionPlacement {
  let next = start % instances;
  const givenBack: number[] = [];
  return {
    next: () => {
      const returned = givenBack.shift();
      if (returned !== undefined) return placedSessionId(returned, instances);
      const position = next;
      next = (next + 1) % instances;
      return placedSessionId(position, instances);
    },
    giveBack: (id) => {
      const position = instancePositionOf(id);
      if (position < instances) givenBack.push(position);
    },
  };
}
