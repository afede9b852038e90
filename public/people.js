// The chat page's People panel: connections between users of this site (docs/connections.md).
// Ask another user by their user id; they accept; then both chat. Where the page may read the
// database (locally, signed in, with the database emulator named by the server's init.js), the
// open conversation is followed live with the Realtime Database SDK; anywhere else it is polled
// through the API. Loaded by app.js, which hands it what the two parts share.

/** How often the open panel reads the list of connections, and a polled conversation its messages. */
const LIST_EVERY_MS = 4000;
const POLL_EVERY_MS = 2000;

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** @param {{ connection_id: string }} connection */
const connectionIdOf = (connection) => connection.connection_id;

/**
 * @typedef {{ id: string, position: number, sender_id: string, content: string, timestamp: number }} Message
 * @typedef {{ connection_id: string, status: string, other_user_id: string, requested_by_you: boolean,
 *   message_count: number, blocked_by_you: boolean, blocked_by_them: boolean }} Connection
 */

/**
 * @param {{
 *   apiFetch: (url: string, init: { method: string, headers?: Record<string, string>, json?: () => unknown }) => Promise<Response>,
 *   base: () => string,
 *   userId: () => string,
 *   signedIn: () => boolean,
 *   errorText: (failure: any) => string,
 *   answerFailure: (body: any, response: Response) => any,
 *   pageFailure: (error: unknown, what: string) => any,
 *   mayBeStored: (failure: any) => boolean,
 *   isPageError: (error: unknown) => boolean,
 *   readJson: (response: Response) => Promise<any>,
 *   loadOnce: (name: string, src: string) => Promise<unknown>,
 *   sdkVersion: string,
 *   newIdempotencyKey: () => string,
 *   mergedById: <T>(first: T[], rest: T[], idOf: (entry: T) => string) => T[],
 *   focusLost: () => boolean,
 * }} shared
 */
export function startPeople(shared) {
  const ui = {
    panel: /** @type {HTMLDetailsElement} */ ($("people")),
    you: $("people-you"),
    connectForm: /** @type {HTMLFormElement} */ ($("connect")),
    connectUser: /** @type {HTMLInputElement} */ ($("connect-user")),
    refresh: /** @type {HTMLButtonElement} */ ($("connections-refresh")),
    list: $("connections"),
    more: /** @type {HTMLButtonElement} */ ($("connections-more")),
    conversation: $("conversation"),
    with: $("conversation-with"),
    status: $("conversation-status"),
    earlier: /** @type {HTMLButtonElement} */ ($("people-earlier")),
    log: $("people-log"),
    composer: /** @type {HTMLFormElement} */ ($("people-composer")),
    message: /** @type {HTMLTextAreaElement} */ ($("people-message")),
    send: /** @type {HTMLButtonElement} */ ($("people-send")),
    error: $("people-error"),
  };

  // The panel's state, kept here only and shown by render().
  const state = {
    /** @type {Connection[]} newest activity first, as far as shown */
    connections: [],
    /** Whose the list shown is (the user id it was read for): another's answer is never shown under it. */
    listOwner: "",
    /** @type {string | null} the cursor of the connections after those shown */
    connectionsNext: null,
    /**
     * Whether the visitor asked for older connections: the list then keeps them, each read of the
     * first page updating what it holds and adding what moved to the front (any change of a
     * connection moves it there), and keeps the cursor that goes on after them.
     */
    olderShown: false,
    /**
     * @type {Set<string>} the connections with an action of the visitor's under way (until the list
     * read after it is shown): their buttons do nothing meanwhile, so that a double click on End ends
     * once instead of ending, then being told the connection has ended.
     */
    acting: new Set(),
    /**
     * @type {{ id: string, owner: string, other: string, status: string, messages: Map<string, Message>, live: boolean, earlier?: number | null } | undefined}
     * the open conversation; `owner`: the user id it was opened as (both users of a connection
     * share its id: whose it is, not which, tells that it is still the visitor's); `earlier`: the
     * cursor of the messages before those shown (null: none, or followed live, whole; undefined
     * until its first read through the API)
     */
    open: undefined,
    /**
     * What the visitor's last action met: kept on view until they act again (send, open, ask,
     * accept ...), so that a background read never wipes what it says of a message given back.
     */
    error: "",
    /** What the last background read met (the list's, or a polled conversation's): the next one that succeeds clears it. */
    readError: "",
    /** The list as last drawn, to redraw only on a change (a button under the pointer stays put). */
    drawn: "",
    /**
     * @type {Map<string, { text: string, key: string, said: string }>} by boxKey (user and connection), the message given back after
     * a failure and its Idempotency-Key: its answer may have been lost after it was stored, and sent
     * again with the same key it is stored (and notified) once. Dropped when that text is sent and
     * stored, or when another text is sent instead. `said` is what the panel said of its failure,
     * said again when its conversation is opened again with that text in the box.
     */
    givenBack: new Map(),
    /**
     * @type {Map<string, string>} by boxKey (user and connection), the text of the message box of
     * each conversation not on view: the box is one, and what was typed in (or given back to) one
     * conversation is never sent to another, nor as another user.
     */
    drafts: new Map(),
  };
  /** What stops following the open conversation (a database listener or a poll). */
  let unfollow = () => undefined;
  let listTimer = 0;
  /**
   * The list's reads of its first page, numbered as sent (the background reads, the visitor's, the
   * one after each action overlap): an answer is shown only when newer than the last shown, and
   * never when sent before the last action finished (it may say how things were before it).
   */
  const listReads = { sent: 0, shown: 0, floor: 0 };
  /** @type {string | null} the cursor being followed, while an older page of the list is read */
  let readingOlder = null;
  /** @type {number | null} the cursor being followed, while earlier messages are read */
  let readingEarlier = null;

  /** What the drafts and the messages given back are kept by: the user's, never the other user's of the same connection. */
  const boxKey = (owner, connectionId) => `${owner}\n${connectionId}`;

  /**
   * The open conversation, if it is still the visitor's: the user id changed (the field, without
   * sign-in) lets it go, its box kept as a draft for that user, and what was said of it (a message
   * given back) off view. The one check: render, open and send all go through it.
   */
  function current() {
    const conversation = state.open;
    if (!conversation || conversation.owner === shared.userId()) return conversation;
    unfollow();
    if (ui.message.value !== "") state.drafts.set(boxKey(conversation.owner, conversation.id), ui.message.value);
    ui.message.value = "";
    ui.log.replaceChildren();
    state.open = undefined;
    state.error = "";
    return undefined;
  }

  function update(changes) {
    Object.assign(state, changes);
    render();
  }

  // -------------------------------------------------------------------------------------------
  // Where the API is: the Hosting routes under a base ending in /api/v1, else the function URLs
  // -------------------------------------------------------------------------------------------

  function urls() {
    const root = shared.base().replace(/\/+$/, "");
    const id = (value) => encodeURIComponent(value);
    if (/\/api\/v1$/.test(root)) {
      return {
        connections: `${root}/connections`,
        connection: (connectionId) => `${root}/connections/${id(connectionId)}`,
        action: (connectionId, action) => `${root}/connections/${id(connectionId)}/${action}`,
        messages: (connectionId) => `${root}/connections/${id(connectionId)}/messages`,
      };
    }
    const functionOf = { accept: "acceptConnection", decline: "declineConnection", block: "blockConnection" };
    return {
      connections: `${root}/connections`,
      connection: (connectionId) => `${root}/connection/${id(connectionId)}`,
      action: (connectionId, action) => `${root}/${functionOf[action]}/${id(connectionId)}`,
      messages: (connectionId) => `${root}/connectionMessages/${id(connectionId)}`,
    };
  }

  /** Who acts, for requests without an ID token (a signed-in caller is named by the token). */
  function actor() {
    return shared.signedIn() ? {} : { user_id: shared.userId() };
  }

  function withActor(url) {
    if (shared.signedIn()) return url;
    return `${url}${url.includes("?") ? "&" : "?"}user_id=${encodeURIComponent(shared.userId())}`;
  }

  /** A call's failure: the sentence to show, and whether what it asked for may have been done all the same. */
  class CallFailure extends Error {
    constructor(failure, unsure) {
      super(shared.errorText(failure));
      this.code = failure.code;
      this.unsure = unsure;
    }
  }

  /** Whether a call met a connection that no longer exists: erased, with its messages, by either of its users. */
  const isGone = (error) => error instanceof CallFailure && error.code === "CONNECTION_NOT_FOUND";

  /** A read's catch: a conversation that no longer exists is closed, its failure said as any other. */
  const closedIfGone = (connectionId) => (error) => {
    if (isGone(error)) closeConversation(connectionId);
    throw error;
  };

  /** One API call; its JSON body, or throws its CallFailure. */
  async function call(url, method, json, headers = {}) {
    let response;
    try {
      response = await shared.apiFetch(url, { method, headers, ...(json ? { json: () => ({ ...actor(), ...json }) } : {}) });
    } catch (error) {
      // Thrown by the page before sending (a PageError), nothing was sent; otherwise the request may have arrived.
      throw new CallFailure(shared.pageFailure(error, "Could not reach the API"), !shared.isPageError(error));
    }
    const body = await shared.readJson(response);
    if (response.ok && body?.success) return body;
    const failure = shared.answerFailure(body, response);
    throw new CallFailure(failure, shared.mayBeStored(failure));
  }

  /**
   * Runs what the visitor asked for, saying its failure on the panel instead of throwing it. What
   * was said before goes when the visitor acts again, not when a background read succeeds.
   */
  async function attempt(work) {
    if (state.error) update({ error: "" });
    await counted(async () => {
      try {
        await work();
      } catch (error) {
        update({ error: error instanceof Error ? error.message : String(error) });
      }
    });
  }

  /** Runs a background read (the list's, a polled conversation's): its failure is said until the next one succeeds. */
  async function read(work) {
    await counted(async () => {
      try {
        await work();
        if (state.readError) update({ readError: "" });
      } catch (error) {
        update({ readError: error instanceof Error ? error.message : String(error) });
      }
    });
  }

  /**
   * Runs `work`, the panel's `data-pending` counting it until it is done: at 0, every answer the
   * panel asked for has been acted on (shown or dropped), which a watcher can wait for.
   */
  let pending = 0;
  async function counted(work) {
    ui.panel.dataset.pending = String(++pending);
    try {
      await work();
    } finally {
      ui.panel.dataset.pending = String(--pending);
    }
  }

  // -------------------------------------------------------------------------------------------
  // The list of connections
  // -------------------------------------------------------------------------------------------

  /** Reads the first page of the list, and shows it if it is still the freshest word on it. */
  async function loadList() {
    const number = ++listReads.sent;
    const owner = shared.userId();
    const body = await call(withActor(urls().connections), "GET");
    if (number <= listReads.shown || number <= listReads.floor || owner !== shared.userId()) return;
    listReads.shown = number;
    if (owner !== state.listOwner || !state.olderShown) {
      update({ connections: body.connections, connectionsNext: body.next_cursor, listOwner: owner, olderShown: false });
    } else {
      // Older connections shown: the fresh first page, then those shown that it does not hold.
      update({ connections: shared.mergedById(body.connections, state.connections, connectionIdOf) });
    }
    const open = state.open && body.connections.find((connection) => connection.connection_id === state.open?.id);
    if (open && state.open && open.status !== state.open.status) update({ open: { ...state.open, status: open.status } });
    // A whole list (one page) without the open conversation: it was erased, by either user.
    else if (state.open && !open && body.next_cursor === null) closeConversation(state.open.id);
  }

  /** Shows the connections after those shown ("Show older connections"), following the list's cursor. */
  async function loadOlder() {
    const cursor = state.connectionsNext;
    const owner = state.listOwner;
    if (cursor === null || readingOlder === cursor) return;
    readingOlder = cursor;
    update({ olderShown: true });
    try {
      const body = await call(withActor(`${urls().connections}?cursor=${encodeURIComponent(cursor)}`), "GET");
      // Answered late: another user's list on view, or this page already added by an earlier click.
      if (owner !== state.listOwner || owner !== shared.userId() || state.connectionsNext !== cursor) return;
      update({ connections: shared.mergedById(state.connections, body.connections, connectionIdOf), connectionsNext: body.next_cursor });
    } catch (error) {
      // A cursor refused (the cursor secret deleted: docs/conversations.md, Cursors) stays refused,
      // and each read of the first page would keep it while older connections are shown: the list
      // starts again from its first page, the older ones dropped, and the next click follows the
      // fresh page's cursor. Nothing went wrong for the visitor: nothing is said.
      const stillOurs = owner === state.listOwner && owner === shared.userId() && state.connectionsNext === cursor;
      if (!(error instanceof CallFailure && error.code === "INVALID_CURSOR" && stillOurs)) throw error;
      update({ olderShown: false });
      await loadList();
    } finally {
      if (readingOlder === cursor) readingOlder = null;
    }
  }

  /** `connection` as an action's answer gives it, in place of the one shown. */
  function showChanged(connection) {
    const id = connection.connection_id;
    update({ connections: state.connections.map((shown) => (shown.connection_id === id ? connection : shown)) });
    if (state.open?.id === id && state.open.status !== connection.status) update({ open: { ...state.open, status: connection.status } });
  }

  /** A list read sent before now may have been answered before what was just done: none of them is shown. */
  function afterAction() {
    listReads.floor = listReads.sent;
  }

  async function act(connectionId, action) {
    if (state.acting.has(connectionId)) return;
    state.acting.add(connectionId);
    render();
    const owner = shared.userId();
    try {
      try {
        let body;
        if (action === "end") body = await call(withActor(urls().connection(connectionId)), "DELETE");
        else if (action === "unblock") body = await call(withActor(urls().action(connectionId, "block")), "DELETE");
        else body = await call(urls().action(connectionId, action), "POST", {});
        // Answered with the connection as it now stands: shown at once, wherever it is in the list (a
        // block or an unblock does not move it to the first page, which the read below refreshes).
        if (owner === state.listOwner && owner === shared.userId()) showChanged(body.connection);
      } finally {
        // Done, failed or unknown (an answer lost): either way a read sent before may be out of date.
        afterAction();
      }
      await loadList();
    } finally {
      state.acting.delete(connectionId);
      render();
    }
  }

  function buttonsOf(connection) {
    const { status, requested_by_you: mine, blocked_by_you: blocking } = connection;
    const buttons = [];
    if (status === "pending" && !mine) buttons.push(["accept", "Accept"], ["decline", "Decline"]);
    if (status === "accepted" || status === "ended" || status === "declined") buttons.push(["open", "Open"]);
    if (status === "pending" || status === "accepted") buttons.push(["end", mine && status === "pending" ? "Withdraw" : "End"]);
    buttons.push(blocking ? ["unblock", "Unblock"] : ["block", "Block"]);
    return buttons;
  }

  function describe(connection) {
    const { status, requested_by_you: mine, blocked_by_you: blocking, blocked_by_them: blocked } = connection;
    const said = status === "pending" ? (mine ? "asked, waiting for them" : "asks to connect") : status;
    return `${said}${blocking ? ", blocked by you" : blocked ? ", blocked" : ""} · ${connection.message_count} message${connection.message_count === 1 ? "" : "s"}`;
  }

  // -------------------------------------------------------------------------------------------
  // The open conversation: live from the database where the page may read it, else polled
  // -------------------------------------------------------------------------------------------

  async function open(connection) {
    unfollow();
    const id = connection.connection_id;
    const leaving = current();
    const owner = shared.userId();
    const box = boxKey(owner, id);
    if (leaving?.id !== id) {
      // The box goes with its conversation: kept for the one left, that of the one opened put back.
      if (leaving && ui.message.value !== "") state.drafts.set(boxKey(owner, leaving.id), ui.message.value);
      ui.message.value = state.drafts.get(box) ?? "";
      state.drafts.delete(box);
      const kept = state.givenBack.get(box);
      if (kept && kept.text === ui.message.value) update({ error: kept.said });
    }
    update({ open: { id, owner, other: connection.other_user_id, status: connection.status, messages: new Map(), live: false, earlier: undefined } });
    ui.log.replaceChildren();
    const database = await liveDatabase().catch(() => undefined);
    if (database) follow(database, connection.connection_id);
    else poll(connection.connection_id);
  }

  /**
   * The Realtime Database SDK, where the page may listen: signed in (the rules let the two users
   * of a connection read it), and told a database by the server's init.js (locally, the emulator
   * the server stores in). Deployed, the page's policy does not name the database's hosts, so it polls.
   */
  async function liveDatabase() {
    // @ts-ignore: set by the local server's init.js only
    const emulator = typeof window.CHATIFY_DATABASE_EMULATOR === "string" ? window.CHATIFY_DATABASE_EMULATOR : undefined;
    if (!shared.signedIn() || !emulator || !("firebase" in window)) return undefined;
    // @ts-ignore: the compat SDK is a global
    const firebase = window.firebase;
    // Loaded once for every conversation opened; a load that failed is tried again at the next one.
    await shared.loadOnce("database", `/__/firebase/${shared.sdkVersion}/firebase-database-compat.js`);
    const database = firebase.database();
    if (!database.__chatifySetUp) {
      // Before the first ref (the SDK warns after it). The Realtime Database SDK (firebase 12.19.0,
      // @firebase/database 1.1.5) records one failed WebSocket attempt in localStorage
      // (firebase:previous_websocket_failure) and from then on connects by long polling, which
      // loads /.lp scripts from the database host: the page's policy (script-src 'self') refuses
      // them, for good. WebSockets only, an attempt that fails is simply made again.
      database.INTERNAL.forceWebSockets();
      const [host, port] = emulator.split(":");
      database.useEmulator(host, Number(port));
      database.__chatifySetUp = true;
    }
    return database;
  }

  /**
   * Closes the open conversation if it is `connectionId`'s (any, without one): it no longer
   * exists, so none of its messages stays on view and its box is not offered.
   */
  function closeConversation(connectionId) {
    if (!state.open || (connectionId !== undefined && state.open.id !== connectionId)) return;
    unfollow();
    state.givenBack.delete(boxKey(state.open.owner, state.open.id));
    ui.message.value = "";
    ui.log.replaceChildren();
    update({ open: undefined });
  }

  /**
   * The user's data was erased (app.js, "Erase my data"): every connection they are part of with
   * it, so the panel lets go of them all, and shows no list read sent before.
   */
  function erased() {
    afterAction();
    closeConversation();
    state.drafts.clear();
    state.givenBack.clear();
    update({ connections: [], connectionsNext: null, olderShown: false });
  }

  /** Listens to the connection's messages and to its state (its journal holds those committed and not copied yet). */
  function follow(database, connectionId) {
    const messages = database.ref(`connections/${connectionId}/messages`);
    const stateRef = database.ref(`connections/${connectionId}/state`);
    const onMessages = (snapshot) => received(connectionId, snapshot.val() ?? {}, undefined);
    const onState = (snapshot) => {
      const value = snapshot.val() ?? {};
      received(connectionId, value.pending ?? {}, value.status);
    };
    const failed = () => {
      unfollow();
      poll(connectionId);
    };
    messages.on("value", onMessages, failed);
    stateRef.on("value", onState, failed);
    unfollow = () => {
      messages.off("value", onMessages);
      stateRef.off("value", onState);
      unfollow = () => undefined;
    };
    // The listener reads the conversation whole: nothing earlier to ask for.
    if (state.open) update({ open: { ...state.open, live: true, earlier: null } });
  }

  function received(connectionId, byKey, status) {
    if (state.open?.id !== connectionId) return;
    const messages = new Map(state.open.messages);
    for (const [key, message] of Object.entries(byKey)) messages.set(key, { id: key, position: Number(key.slice(1)), ...message });
    update({ open: { ...state.open, messages, ...(status ? { status } : {}) } });
  }

  function poll(connectionId) {
    let stopped = false;
    const next = async () => {
      if (stopped) return;
      await read(async () => {
        const body = await call(withActor(`${urls().messages(connectionId)}?limit=100`), "GET").catch(closedIfGone(connectionId));
        received(connectionId, Object.fromEntries(body.messages.map((message) => [message.id, message])), undefined);
        // The first read says where the messages before it start; later ones only add the newest.
        if (state.open?.id === connectionId && state.open.earlier === undefined) update({ open: { ...state.open, earlier: body.next_before } });
      });
      if (!stopped) timer = window.setTimeout(next, POLL_EVERY_MS);
    };
    let timer = window.setTimeout(next, 0);
    unfollow = () => {
      stopped = true;
      window.clearTimeout(timer);
      unfollow = () => undefined;
    };
  }

  /** Shows the messages before those shown ("Show earlier messages"), a page of 100, following `next_before`. */
  async function loadEarlier() {
    const conversation = state.open;
    const cursor = conversation?.earlier;
    if (!conversation || cursor === null || cursor === undefined || readingEarlier === cursor) return;
    readingEarlier = cursor;
    try {
      const body = await call(withActor(`${urls().messages(conversation.id)}?limit=100&before=${String(cursor)}`), "GET").catch(closedIfGone(conversation.id));
      // Answered late: another conversation opened meanwhile, or these messages already shown by an earlier click.
      if (state.open?.id !== conversation.id || state.open.earlier !== cursor) return;
      received(conversation.id, Object.fromEntries(body.messages.map((message) => [message.id, message])), undefined);
      if (state.open?.id === conversation.id) update({ open: { ...state.open, earlier: body.next_before } });
    } finally {
      if (readingEarlier === cursor) readingEarlier = null;
    }
  }

  /**
   * Sends the box's text, taken out of the box at once so that the next message can be typed (and
   * sent) while this one is on its way; a message that fails goes back into its conversation's box
   * if empty (on view, or kept for when that conversation is opened again), with its key, so that
   * sending it again never stores it twice, and never to another person.
   */
  async function sendMessage(event) {
    event.preventDefault();
    // Another user id in the field: the box (another user's) is let go of, and nothing is sent.
    const conversation = current();
    const text = ui.message.value;
    if (!conversation || text.trim() === "") return render();
    const box = boxKey(conversation.owner, conversation.id);
    ui.message.value = "";
    // The text given back, sent again unchanged, keeps its key: if the first send was stored (its
    // answer lost on the way back), this one gets that message back. Another text is a new message.
    const kept = state.givenBack.get(box);
    const key = kept?.text === text ? kept.key : shared.newIdempotencyKey();
    state.givenBack.delete(box);
    await attempt(async () => {
      try {
        const body = await call(urls().messages(conversation.id), "POST", { message: text }, { "Idempotency-Key": key });
        received(conversation.id, { [body.message.id]: body.message }, undefined);
      } catch (error) {
        // Erased meanwhile: there is no one to send it to, nor a box to give it back to.
        if (isGone(error)) {
          closeConversation(conversation.id);
          state.drafts.delete(box);
          throw error;
        }
        const said =
          error instanceof CallFailure && error.unsure
            ? `${error.message} Your message may have been sent all the same: sending it again unchanged is safe, it is not sent twice.`
            : error instanceof Error
              ? error.message
              : String(error);
        // Given back only into an empty box: the next message, typed meanwhile, is not overwritten.
        // Another conversation may be on view by now: then it waits in its own conversation's box.
        const onView = current()?.id === conversation.id && state.open?.owner === conversation.owner;
        const inBox = onView ? ui.message.value : (state.drafts.get(box) ?? "");
        if (inBox === "") {
          if (onView) ui.message.value = text;
          else state.drafts.set(box, text);
          state.givenBack.set(box, { text, key, said });
        }
        if (onView) throw new Error(said);
        const where = inBox === "" ? ` It is back in your conversation with ${conversation.other}.` : "";
        throw new Error(`To ${conversation.other}: ${said}${where}`);
      }
    });
  }

  // -------------------------------------------------------------------------------------------
  // Showing it
  // -------------------------------------------------------------------------------------------

  /**
   * What held the keyboard focus in the panel before a render: the control, and for a list's
   * button its connection, action and place (the list drawn again, its buttons are new ones).
   * @typedef {{ element: HTMLElement, id?: string, action?: string, place: number }} Held
   */
  /**
   * Where the panel last put the focus in place of a control out of use (an item's buttons during
   * its action), and that control: while the focus stays there, each render tries it again, so
   * that a Block that failed takes the focus back once its buttons are enabled again.
   * @type {{ at: HTMLElement, wanted: Held } | undefined}
   */
  let standIn;

  /** The focus never falls back to the top of the page when the control that held it goes (docs/chat-page.md). */
  function render() {
    const held = focusHeld();
    draw();
    focusBack(held);
  }

  /** @returns {Held | undefined} */
  function focusHeld() {
    const active = document.activeElement;
    if (!(active instanceof HTMLElement) || !ui.panel.contains(active)) return undefined;
    if (standIn?.at === active) return standIn.wanted;
    standIn = undefined;
    const items = [...ui.list.children];
    // "Show older connections" gone with the last page: the first connection it added takes the focus.
    if (active === ui.more) return { element: active, place: items.length };
    const item = active.closest("li[data-connection-id]");
    if (item instanceof HTMLElement && ui.list.contains(item)) return { element: active, id: item.dataset.connectionId, action: active.dataset.action, place: items.indexOf(item) };
    // In the conversation: closed, its connection's Open button takes the focus.
    return { element: active, id: ui.conversation.contains(active) ? state.open?.id : undefined, action: "open", place: -1 };
  }

  /** Whether the focus can stay on (or go to) `element`: on the page, shown and enabled. */
  const usable = (element) => element.isConnected && !(/** @type {HTMLButtonElement} */ (element).disabled) && element.closest("[hidden]") === null;

  /** After a render: the focus `held` had, if lost (or on a control now out of use), goes back to the same or the nearest control. */
  function focusBack(held) {
    if (!held) return;
    const active = document.activeElement;
    const standing = standIn !== undefined && active === standIn.at;
    if (!shared.focusLost() && !standing && !(active === held.element && !usable(held.element))) return;
    const target = nearest(held);
    if (target !== active) target.focus();
    // Kept only while its connection's action runs: then its buttons come back, or the item changed for good.
    standIn = target !== held.element && held.id !== undefined && state.acting.has(held.id) ? { at: target, wanted: held } : undefined;
  }

  /** @param {Held} held */
  function nearest(held) {
    if (usable(held.element)) return held.element;
    const items = /** @type {HTMLElement[]} */ ([...ui.list.children]);
    const inConversation = ui.conversation.contains(held.element);
    // The message box or Send disabled, "Show earlier messages" gone: the messages' log, in view.
    if (inConversation && !ui.conversation.hidden) return ui.log;
    // The connection's item (its same button, else another, else the item), else the one now at its place.
    const item = items.find((child) => child.dataset.connectionId === held.id) ?? (held.place >= 0 ? items[Math.min(held.place, items.length - 1)] : undefined);
    if (!item) return ui.refresh;
    const buttons = /** @type {HTMLElement[]} */ ([...item.querySelectorAll("button")]);
    const button = buttons.find((candidate) => candidate.dataset.action === held.action && usable(candidate)) ?? buttons.find(usable);
    if (button) return button;
    item.tabIndex = -1;
    return item;
  }

  function draw() {
    const conversation = current();
    ui.you.textContent = shared.userId();
    const said = [state.error, state.readError].filter((text) => text !== "").join(" ");
    ui.error.textContent = said;
    ui.error.hidden = said === "";
    const drawn = JSON.stringify(state.connections);
    if (drawn !== state.drawn) {
      state.drawn = drawn;
      ui.list.replaceChildren(...state.connections.map(listItem));
    }
    for (const item of ui.list.children) {
      const busy = state.acting.has(/** @type {HTMLElement} */ (item).dataset.connectionId ?? "");
      for (const button of item.querySelectorAll("button:not(.open)")) /** @type {HTMLButtonElement} */ (button).disabled = busy;
    }
    ui.more.hidden = state.connectionsNext === null;
    ui.conversation.hidden = conversation === undefined;
    ui.panel.dataset.live = String(conversation?.live === true);
    if (!conversation) return;
    ui.conversation.dataset.connectionId = conversation.id;
    ui.conversation.dataset.status = conversation.status;
    ui.with.textContent = conversation.other;
    ui.status.textContent = `${conversation.status}; ${conversation.live ? "live from the database" : "read through the API every few seconds"}`;
    ui.message.disabled = conversation.status !== "accepted";
    ui.send.disabled = conversation.status !== "accepted";
    ui.earlier.hidden = conversation.earlier === null || conversation.earlier === undefined;
    const shown = new Set([...ui.log.children].map((item) => /** @type {HTMLElement} */ (item).dataset.id));
    const sorted = [...conversation.messages.values()].sort((a, b) => a.position - b.position);
    for (const message of sorted) {
      if (shown.has(message.id)) continue;
      const item = document.createElement("li");
      const mine = message.sender_id === shared.userId();
      item.className = mine ? "user" : "assistant";
      item.dataset.id = message.id;
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = mine ? "You" : conversation.other;
      const body = document.createElement("span");
      body.className = "text";
      body.textContent = message.content;
      item.append(who, body);
      // In key order: before the first shown message with a greater key.
      const after = [...ui.log.children].find((child) => (/** @type {HTMLElement} */ (child).dataset.id ?? "") > message.id);
      ui.log.insertBefore(item, after ?? null);
      // Only a message added at the end is scrolled to: earlier ones go above, out of the way.
      if (!after) item.scrollIntoView({ block: "end" });
    }
  }

  function listItem(connection) {
    const item = document.createElement("li");
    item.dataset.connectionId = connection.connection_id;
    item.dataset.status = connection.status;
    const name = document.createElement("span");
    name.className = "who";
    name.textContent = connection.other_user_id;
    const said = document.createElement("span");
    said.className = "note";
    said.textContent = describe(connection);
    const actions = document.createElement("span");
    actions.className = "actions";
    for (const [action, label] of buttonsOf(connection)) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = `secondary ${action}`;
      button.dataset.action = action;
      button.textContent = label;
      button.addEventListener("click", () => {
        // Ignored while an action on this connection is under way (its buttons are disabled then too).
        if (action !== "open" && state.acting.has(connection.connection_id)) return;
        void attempt(() => (action === "open" ? open(connection) : act(connection.connection_id, action)));
      });
      actions.append(button);
    }
    item.append(name, said, actions);
    return item;
  }

  // -------------------------------------------------------------------------------------------
  // Wiring: nothing is asked of the server until the panel is opened
  // -------------------------------------------------------------------------------------------

  ui.panel.addEventListener("toggle", () => {
    window.clearInterval(listTimer);
    if (!ui.panel.open) return;
    // One read of the list at a time, the first one's included: over a link gone dead each waits
    // for its answer's head up to the page's bound (app.js ANSWER_HEAD_MS, 90 s), and reads piling
    // up every LIST_EVERY_MS would hold the browser's connections to the API, the chat's own calls
    // queued behind them.
    let reading = false;
    const readOnce = (work) => {
      if (reading) return;
      reading = true;
      void work().finally(() => {
        reading = false;
      });
    };
    readOnce(() => attempt(loadList));
    listTimer = window.setInterval(() => readOnce(() => read(loadList)), LIST_EVERY_MS);
  });
  ui.refresh.addEventListener("click", () => void attempt(loadList));
  ui.more.addEventListener("click", () => void attempt(loadOlder));
  ui.earlier.addEventListener("click", () => void attempt(loadEarlier));
  ui.connectForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const other = ui.connectUser.value.trim();
    if (!other) return;
    void attempt(async () => {
      try {
        await call(urls().connections, "POST", { other_user_id: other });
      } finally {
        afterAction();
      }
      ui.connectUser.value = "";
      await loadList();
    });
  });
  ui.composer.addEventListener("submit", sendMessage);
  ui.message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    }
  });
  render();
  return { render, erased };
}
