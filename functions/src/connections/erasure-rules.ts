import type { DeviceRecord, PairRecord } from "../store/connection-records";
import type { ErasingRule } from "../store/connection-erasure-store";
import { userKey } from "../session/ledger/limits";
import { otherParticipant } from "./connection-rules";
import { removeDevices } from "./device-rules";

/*
 * What erasing a user does to the records connections share with others, as pure rules (applied
 * atomically by the store): see docs/connections.md, "Erasure".
 */

/**
 * The pair's record loses everything of the erased user: their id, their own block and the pair's
 * current connection (erased with them). The other user's block stays, stripped of both ids (the
 * record's key is a hash of the pair): erasing one's data must not be a way around a block. With
 * no such block the record goes. A pair whose current connection was asked for after `cutoff` (the
 * user started over once the erasure was requested) is theirs to keep, as it is.
 *
 * The record kept names the blocker by their user key (`blocker_key`, never an id), so that the
 * blocker's own erasure finds it: their block is their data, and goes with it (the record then
 * holds nothing else). A record kept by an older version names nobody, and stays.
 */
export function forgetPairUser(userId: string, cutoff: number): ErasingRule<PairRecord, boolean> {
  return (pair) => {
    if (pair && pair.user_a === undefined && pair.user_b === undefined) return pair.blocker_key === userKey(userId) ? { outcome: true, next: null } : { outcome: false };
    const erased = pair?.user_a === userId ? "a" : pair?.user_b === userId ? "b" : undefined;
    if (!pair || erased === undefined) return { outcome: false };
    if (pair.current && pair.current.created_at > cutoff) return { outcome: false };
    const other = otherParticipant(erased);
    const block = pair.blocked?.[other];
    if (block === undefined) return { outcome: true, next: null };
    const blocker = other === "a" ? pair.user_a : pair.user_b;
    return { outcome: true, next: { blocked: { [other]: block }, ...(blocker === undefined ? {} : { blocker_key: userKey(blocker) }) } };
  };
}

/**
 * The user's devices registered up to `cutoff` go (a token is a credential for a device), with
 * the preview setting once none is left; the outcome is how many tokens went.
 */
export function forgetDevices(cutoff: number): ErasingRule<DeviceRecord, number> {
  return (record) => {
    if (!record) return { outcome: 0 };
    const tokens = Object.entries(record.tokens ?? {});
    const old = tokens.filter(([, device]) => device.updated_at <= cutoff).map(([hash]) => hash);
    if (old.length === tokens.length) return { outcome: old.length, next: null };
    if (old.length === 0) return { outcome: 0 };
    return { outcome: old.length, next: removeDevices(old, cutoff)(record).next };
  };
}
