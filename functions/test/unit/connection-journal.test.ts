import { planConnectionCopy } from "../../src/store/rtdb/connection-journal";
import { CREATED_AT } from "../support/fixtures";
import { newConnection, refOf } from "../support/connection-fixtures";

/*
 * The copy a connection's commit sends, on plain values: its messages from the connection's node
 * and its place in both users' lists from the lists' node, two updates that each go from the node
 * they write (test/http/copy-roots.test.ts sees them sent).
 */
describe("the copy a connection's commit sends", () => {
  const connection = newConnection();
  const message = { sender_id: connection.meta.user_a, content: "hello", timestamp: CREATED_AT + 1 };
  const state = { status: "accepted", message_count: 1, last_activity: CREATED_AT + 1, pending: { m000000001: message } };

  it("copies the journal's messages relative to the connection and the last activity relative to the lists", () => {
    const { copy } = planConnectionCopy(refOf(connection), { value: state, wrote: true }, undefined);
    expect(copy).toEqual({
      messages: { "messages/m000000001": message },
      listed: { [`${connection.userKeys.a}/${connection.id}`]: CREATED_AT + 1, [`${connection.userKeys.b}/${connection.id}`]: CREATED_AT + 1 },
      entries: new Set(["m000000001"]),
      closed: false,
    });
  });

  it("sends the messages again without touching the lists when the commit changed nothing", () => {
    const { copy } = planConnectionCopy(refOf(connection), { value: state, wrote: false }, undefined);
    expect(copy?.messages).toEqual({ "messages/m000000001": message });
    expect(copy?.listed).toEqual({});
  });
});
