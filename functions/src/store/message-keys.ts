/**
 * Keys of stored messages and pending exchanges. They are derived from the exchange's
 * sequence number, so writing the same exchange twice writes the same keys (idempotent),
 * and zero-padded with a letter prefix so that key order is conversation order and the
 * Realtime Database never mistakes the children for an array.
 */
const DIGITS = 9;

function pad(n: number): string {
  return String(n).padStart(DIGITS, "0");
}

/** The key of the message at `position` (1-based: exchange n's messages are 2n-1 and 2n). */
export function messageKey(position: number): string {
  return `m${pad(position)}`;
}

/** The position a message key names; undefined for a key that is no message's (one written by hand). */
export function positionOfMessageKey(key: string): number | undefined {
  const position = Number(key.slice(1));
  return Number.isInteger(position) && key === messageKey(position) ? position : undefined;
}

export function userMessageKey(seq: number): string {
  return messageKey(2 * seq - 1);
}

export function assistantMessageKey(seq: number): string {
  return messageKey(2 * seq);
}

export function pendingExchangeKey(seq: number): string {
  return `e${pad(seq)}`;
}

export function seqOfPendingKey(key: string): number | undefined {
  return /^e\d{9}$/.test(key) ? Number(key.slice(1)) : undefined;
}
