import { JournalCopies } from "../../src/store/rtdb/journal-copies";

/**
 * What an instance knows copied of its journals, per node and per creation of it: a session erased
 * and created again under its id (a keyed create's retry) journals its exchanges under the same
 * names (`e000000001`, ...) as the erased one did.
 */
describe("JournalCopies", () => {
  it("answers what is known copied for the creation it was learned of only: nothing for another creation of the id, nor once forgotten", () => {
    const copies = new JournalCopies();
    copies.keep("s", new Set(["e000000001"]), 1_000);
    expect(copies.known("s", 1_000)).toEqual(new Set(["e000000001"]));
    // Created again (another `created_at`), or a state of an older version that carries none.
    expect([copies.known("s", 5_000), copies.known("s")]).toEqual([undefined, undefined]);
    copies.forget("s");
    expect(copies.known("s", 1_000)).toBeUndefined();
  });

  it("keeps an acknowledged copy's entries with what was known of the same creation, in place of what was known of another", async () => {
    const copies = new JournalCopies();
    copies.keep("s", new Set(["e000000001"]), 1_000);
    await copies.sent("s", Promise.resolve(), new Set(["e000000002"]), () => true, 1_000);
    expect(copies.known("s", 1_000)).toEqual(new Set(["e000000001", "e000000002"]));
    // A copy of the session created again under the id: nothing of the earlier creation joins it.
    await copies.sent("s", Promise.resolve(), new Set(["e000000003"]), () => true, 5_000);
    expect([copies.known("s", 5_000), copies.known("s", 1_000)]).toEqual([new Set(["e000000003"]), undefined]);
  });

  it("knows nodes that tell no creation (a connection's state) as before", async () => {
    const copies = new JournalCopies();
    await copies.sent("c", Promise.resolve(), new Set(["e000000001"]), () => true);
    expect(copies.known("c")).toEqual(new Set(["e000000001"]));
  });
});
