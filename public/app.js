// The Chatify chat page: a plain ES module, served as it is (no build step, no framework).
import { startPeople } from "./people.js";
// It talks to the API of README.md: create a session, send messages (read as Server-Sent
// Events with fetch and a stream reader: EventSource cannot send a body or a token), end it.

/** The Firebase JS SDK version loaded from Hosting's reserved URLs, only when the server asks for a token. */
const FIREBASE_SDK_VERSION = "12.19.0";

const params = new URLSearchParams(location.search);
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const ui = {
  startForm: /** @type {HTMLFormElement} */ ($("start")),
  template: /** @type {HTMLSelectElement} */ ($("template")),
  user: /** @type {HTMLInputElement} */ ($("user")),
  startButton: /** @type {HTMLButtonElement} */ ($("start-button")),
  session: $("session"),
  templateName: $("template-name"),
  count: $("count"),
  tokens: $("tokens"),
  endButton: /** @type {HTMLButtonElement} */ ($("end-button")),
  log: $("log"),
  composer: /** @type {HTMLFormElement} */ ($("composer")),
  message: /** @type {HTMLTextAreaElement} */ ($("message")),
  sendButton: /** @type {HTMLButtonElement} */ ($("send-button")),
  status: $("status"),
  error: $("error"),
  settings: /** @type {HTMLFormElement} */ ($("settings")),
  apiBase: /** @type {HTMLInputElement} */ ($("api-base")),
  identity: $("identity"),
  earlier: /** @type {HTMLButtonElement} */ ($("earlier")),
  conversationList: $("conversation-list"),
  noConversations: $("no-conversations"),
  moreConversations: /** @type {HTMLButtonElement} */ ($("more-conversations")),
  downloadData: /** @type {HTMLButtonElement} */ ($("download-data")),
  eraseData: /** @type {HTMLButtonElement} */ ($("erase-data")),
  eraseConfirm: $("erase-confirm"),
  eraseYes: /** @type {HTMLButtonElement} */ ($("erase-yes")),
  eraseNo: /** @type {HTMLButtonElement} */ ($("erase-no")),
};

/** A failure said to the visitor as it is (its message is the sentence to show). */
class PageError extends Error {}

/** This site's own API: the Hosting routes on the page's origin. */
const OWN_BASE = `${location.origin}/api/v1`;

// ---------------------------------------------------------------------------------------------
// The page's state: kept here only. render() shows it; the page never reads it back from the
// document to decide anything. The form fields are the visitor's input, read when submitted and
// written only when the page changes what they hold (a failed message given back, the base in
// use, the signed-in user's id); the conversation log is written as it grows, never read back.
// ---------------------------------------------------------------------------------------------

/**
 * @typedef {"idle" | "starting" | "active" | "streaming" | "ending" | "ended" | "opening" | "watching"} Phase
 * idle: no session yet; starting: creating one; active: ready for a message; streaming: a reply
 * is being written; ending: ending it; ended: over (ended here, or found ended, expired or gone), the
 * start form back and the last session still on view; opening: reading a conversation picked
 * from the list; watching: a reply being written by a request this page no longer holds (it was
 * reloaded mid-reply), followed through its live partial.
 *
 * @typedef {{ id: string, templateName: string, messageCount: number, tokens: number, firstMessage?: string, owner?: string }} SessionView
 * tokens: the session's tokens so far, as its replies report them; at the end, the total the end
 * reports (summary calls included). owner: the uid of the signed-in user whose session it is (none
 * without a sign-in): another user's is never written in (see update).
 *
 * @typedef {{ status: number, retryAfter: string }} ErrorCodeFacts
 * An API error code as the server lists it (functions/src/http/error-codes.ts): its HTTP status,
 * and what its Retry-After means ("wait": a wait to show; "expiry", "none": nothing to show).
 */
const state = {
  /** @type {Phase} */
  phase: "idle",
  /** @type {SessionView | undefined} the current session, or the last one once over */
  session: undefined,
  status: "No session yet.",
  /** What went wrong, said to the visitor; "" when nothing did. */
  error: "",
  /**
   * What the last read of the list met, said after `error`, never in its place: a read in the
   * background must not wipe what the visitor has to act on (an erasure that may have run, a
   * session over). Cleared with `error` when the visitor acts again, and by the next read that succeeds.
   */
  listError: "",
  /** The API base every call goes to. */
  base: OWN_BASE,
  /** @type {string[]} the API bases the deployment allows besides the page's own origin */
  allowedBases: [],
  /** @type {Map<string, ErrorCodeFacts>} the API's error codes, as the server serves them */
  errorCodes: new Map(),
  /** Whether the deployment's files were read: the page is ready. */
  ready: false,
  /** @type {{ account: { getIdToken(): Promise<string>, uid: string }, emulator: string | undefined } | undefined} the Firebase user, once the server asked for one */
  signedIn: undefined,
  /** @type {{ provider: "none" } | { provider: "recaptcha-enterprise", siteKey: string, replayProtection: boolean }} how the deployment has the page attest itself to App Check */
  appCheck: { provider: "none" },
  /** @type {string | undefined} what the App Check tokens sent come from, once the first one was had */
  attestedWith: undefined,
  /** @type {ListedConversation[] | undefined} the user's conversations, newest first, as far as loaded; undefined until read */
  conversations: undefined,
  /** @type {string | null} the cursor of the next page of conversations */
  conversationsNext: null,
  /** @type {string | null} the cursor of the messages before those shown, for the conversation on view */
  earlier: null,
  /** Erasing was asked for and waits for its confirmation. */
  confirmingErase: false,
  /** @type {"" | "download" | "erase"} a data action under way */
  busy: "",
  /**
   * @type {{ owner: string, templateId: string, key: string } | undefined} the Idempotency-Key of a
   * start that failed, sent again when the same user starts the same personality: a create whose
   * answer was lost may have made the session, and its keyed repeat gets that session back.
   */
  startKey: undefined,
  /**
   * @type {{ sessionId: string, text: string, key: string } | undefined} the Idempotency-Key of the
   * message given back after a failure, sent again with that text in that session: a message whose
   * answer was lost may have been stored, and its keyed repeat gets the stored reply back instead of
   * a second model call and a second exchange. Dropped once a send succeeds or the text changes.
   */
  unsent: undefined,
};

/**
 * @typedef {{ session_id: string, template_name: string, title: string | null, status: string, message_count: number, last_activity: string }} ListedConversation
 * A conversation as the list route gives it.
 */

/** The phases in which the page is waiting on something: nothing else may start. */
const WAITING = new Set(["starting", "streaming", "ending", "opening", "watching"]);

/**
 * Whether the page waits on something: a phase of WAITING, or an erasure under way. The erasure
 * keeps the phase (the session stays on view until it succeeds) but then takes the session: a
 * start, a message, an end or a conversation opened meanwhile would answer about erased data.
 */
const waiting = () => WAITING.has(state.phase) || state.busy === "erase";

/** Whether the session on view takes a message or its end now. */
const canWrite = () => state.phase === "active" && !waiting();

/**
 * Whether a call begun in `phase` on `session` still holds the page when its answer comes. The
 * controls keep an erasure from running beside such a call; should one overtake it all the same
 * (the page set idle, the session erased), the call's late answer changes nothing.
 */
const stillHeld = (phase, session) => state.phase === phase && state.session === session;

/**
 * Whether the keyboard focus was lost: a focused control hidden, disabled or drawn again leaves it
 * on <body>, where the next Tab starts over at the top of the page. The page then puts it on a
 * control near the one that went; a focus the visitor moved elsewhere meanwhile stays where it is.
 */
const focusLost = () => document.activeElement === null || document.activeElement === document.body;

/** The list's buttons, one per conversation listed. */
const listButtons = () => /** @type {HTMLButtonElement[]} */ ([...ui.conversationList.querySelectorAll("button")]);

/**
 * Puts the focus on the list's button of `sessionId`; that conversation no longer listed, on the
 * button now at its place `at` (or the last); the list empty, on Start session.
 */
function focusInList(sessionId, at = 0) {
  const buttons = listButtons();
  (buttons.find((button) => button.dataset.sessionId === sessionId) ?? buttons[Math.min(at, buttons.length - 1)] ?? ui.startButton).focus();
}

/**
 * Whether the session on view is the previous user's: the page signed in anew as another user (the
 * old anonymous account deleted or disabled), and the server refuses the session to the new one.
 */
const previousUsersSession = () => state.session?.owner !== undefined && signedInUid !== undefined && state.session.owner !== signedInUid;

/**
 * Every change of state goes through here, and is shown at once. The previous user's session is
 * never "active" (writable): here, whichever path returns to it (a sign-in while the page was idle
 * in it, a start, message or reply-follow authorised before the sign-in and answered after it, an
 * open that met the sign-in and failed), it is left read-only, the start form back.
 */
function update(changes) {
  Object.assign(state, changes);
  const left = state.phase === "active" && previousUsersSession();
  if (left) Object.assign(state, { phase: "ended", earlier: null, status: "Signed in as a new user: the conversation on view was the previous user's. Start a new one to keep chatting." });
  render();
  if (left && focusLost()) ui.startButton.focus();
}

/** @type {{ render(): void, erased(): void } | undefined} the People panel, shown with the rest */
let people;

function render() {
  people?.render();
  const { phase, session, signedIn } = state;
  const open = phase === "active" || phase === "streaming" || phase === "ending" || phase === "opening" || phase === "watching";
  // Outputs only (the browser tests select on them): never read back.
  document.body.dataset.state = phase;
  document.body.dataset.ready = String(state.ready);
  ui.startForm.hidden = open;
  ui.startButton.disabled = waiting();
  ui.session.hidden = session === undefined;
  if (session) {
    ui.session.dataset.sessionId = session.id;
    ui.templateName.textContent = session.templateName;
    ui.count.textContent = String(session.messageCount);
    ui.tokens.textContent = String(session.tokens);
  }
  for (const control of [ui.message, ui.sendButton, ui.endButton]) control.disabled = !canWrite();
  ui.log.setAttribute("aria-busy", String(phase === "streaming"));
  ui.status.textContent = state.status;
  // Once: the list's read and the visitor's call may meet the same refusal.
  const said = [...new Set([state.error, state.listError])].filter((text) => text !== "").join(" ");
  ui.error.textContent = said;
  ui.error.hidden = said === "";
  ui.user.readOnly = signedIn !== undefined;
  ui.identity.textContent =
    (signedIn
      ? `Identity: signed in anonymously with Firebase Auth as ${signedIn.account.uid}${signedIn.emulator ? ` (Auth emulator at ${signedIn.emulator})` : ""}.`
      : "Identity: none sent (the server has not asked for one).") +
    (state.attestedWith ? ` App Check: a token from ${state.attestedWith} goes with each call.` : "");
  ui.earlier.hidden = session === undefined || state.earlier === null;
  ui.earlier.disabled = waiting();
  renderConversations();
  ui.moreConversations.hidden = state.conversationsNext === null;
  ui.eraseConfirm.hidden = !state.confirmingErase;
  for (const control of [ui.downloadData, ui.eraseData, ui.eraseYes]) control.disabled = state.busy !== "" || WAITING.has(phase);
}

/** What the list was last drawn from: it is drawn again only when that changes. */
let drawn = { conversations: /** @type {ListedConversation[] | undefined} */ (undefined), current: "" };

/** The list of conversations, from state: one button per conversation, the one on view marked. */
function renderConversations() {
  const current = state.session?.id ?? "";
  /** The button that had the focus, if one had, by its conversation and place: drawn again, the list gives it back. */
  let focused;
  if (drawn.conversations !== state.conversations || drawn.current !== current) {
    drawn = { conversations: state.conversations, current };
    const active = document.activeElement;
    if (active instanceof HTMLButtonElement && ui.conversationList.contains(active)) focused = { id: active.dataset.sessionId ?? "", at: listButtons().indexOf(active) };
    ui.conversationList.replaceChildren(
      ...(state.conversations ?? []).map((conversation) => {
        const item = document.createElement("li");
        const button = document.createElement("button");
        button.type = "button";
        button.dataset.sessionId = conversation.session_id;
        if (conversation.session_id === current) button.setAttribute("aria-current", "true");
        const title = document.createElement("span");
        title.className = "title";
        title.textContent = conversation.title ?? "(no messages yet)";
        const meta = document.createElement("span");
        meta.className = "meta";
        const count = conversation.message_count;
        meta.textContent = `${conversation.template_name} · ${count} message${count === 1 ? "" : "s"} · ${conversation.status} · ${new Date(conversation.last_activity).toLocaleString()}`;
        button.append(title, meta);
        item.append(button);
        return item;
      }),
    );
  }
  ui.noConversations.hidden = state.conversations === undefined || state.conversations.length > 0;
  for (const button of ui.conversationList.querySelectorAll("button")) /** @type {HTMLButtonElement} */ (button).disabled = waiting();
  if (focused !== undefined && focusLost()) focusInList(focused.id, focused.at);
}

// ---------------------------------------------------------------------------------------------
// Where the API is
// ---------------------------------------------------------------------------------------------

/**
 * The URLs of the three calls under `base`. A base ending in /api/v1 is the Hosting form (the
 * original routes, what this origin serves); any other base is the folder of the function URLs
 * (`https://us-central1-PROJECT.cloudfunctions.net`, or `http://127.0.0.1:5000/demo-chatify/us-central1`).
 */
function apiUrls(base) {
  const root = base.replace(/\/+$/, "");
  const id = (value) => encodeURIComponent(value);
  if (/\/api\/v1$/.test(root)) {
    return {
      create: `${root}/chatbot/session`,
      message: (sessionId) => `${root}/chatbot/session/${id(sessionId)}/message`,
      end: (sessionId) => `${root}/chatbot/session/${id(sessionId)}`,
      list: `${root}/chatbot/sessions`,
      // The same path as ending it: GET reads it.
      read: (sessionId) => `${root}/chatbot/session/${id(sessionId)}`,
      export: `${root}/chatbot/me/export`,
      erase: `${root}/chatbot/me`,
    };
  }
  return {
    create: `${root}/createSession`,
    message: (sessionId) => `${root}/sendMessage/${id(sessionId)}`,
    end: (sessionId) => `${root}/endSession/${id(sessionId)}`,
    list: `${root}/listSessions`,
    read: (sessionId) => `${root}/getSession/${id(sessionId)}`,
    export: `${root}/exportUserData`,
    erase: `${root}/eraseUserData`,
  };
}

/** A JSON file the server that serves the page serves too, or undefined when it cannot be read. */
async function servedJson(path) {
  try {
    const response = await fetch(path, { cache: "no-cache" });
    return response.ok ? await response.json() : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The API bases the deployment allows besides the page's own origin, as it serves them: Hosting
 * a file written for the deployed project (`npm run deploy`), `npm start` its own. Unreadable,
 * none: the page then talks to its own origin only.
 */
async function deploymentBases() {
  const body = await servedJson("/api-bases.json");
  return Array.isArray(body?.apiBases) ? body.apiBases.filter((base) => typeof base === "string").map((base) => baseKey(new URL(base))) : [];
}

/**
 * The API's error codes as its server lists them (Hosting a file written from that list,
 * `npm start` the list itself). Unreadable: none, and errors are said with the server's message
 * alone, without a wait.
 */
async function apiErrorCodes() {
  const body = await servedJson("/error-codes.json");
  const listed = typeof body?.errorCodes === "object" && body.errorCodes !== null ? Object.entries(body.errorCodes) : [];
  return new Map(listed.filter(([, facts]) => typeof facts?.status === "number" && typeof facts?.retryAfter === "string"));
}

/**
 * How the deployment has the page attest itself to App Check (Hosting: a file written for the
 * deployed project; `npm start`: its own): reCAPTCHA Enterprise with the web app's site key, or
 * not at all. Unreadable: not at all (a server that requires App Check then says so). With
 * `replayProtection` the server consumes each message's token: the page sends each message a
 * limited-use token of its own.
 */
async function deploymentAppCheck() {
  const body = await servedJson("/app-check.json");
  return body?.provider === "recaptcha-enterprise" && typeof body.siteKey === "string"
    ? { provider: "recaptcha-enterprise", siteKey: body.siteKey, replayProtection: body.replayProtection === true }
    : { provider: "none" };
}

/** A base as compared: origin and path, without a trailing slash. */
function baseKey(url) {
  return `${url.origin}${url.pathname.replace(/\/+$/, "")}`;
}

/**
 * A URL as the page's own words quote it: as parsed (its controls and every non-ASCII character
 * percent-encoded, bidi controls included), its spaces too, and cut to 80 characters. Quoted raw,
 * a link's `?api=` would write its own sentence, or reorder the page's, in the page's alert.
 */
function quotedUrl(url) {
  const href = url.href.replace(/[\x00-\x20\x7f]/g, (character) => encodeURIComponent(character));
  return href.length > 80 ? `${href.slice(0, 79)}…` : href;
}

/**
 * `raw` as a base the page may send the visitor's ID token and messages to: on its own origin,
 * or one the deployment lists. Anything else (a hostile `?api=` link, a mistyped setting) is a
 * PageError, thrown before any request is made.
 */
function allowedBase(raw, allowed) {
  let url;
  try {
    url = new URL(raw, location.href);
  } catch {
    throw new PageError(`The API base must be a URL, e.g. ${OWN_BASE}.`);
  }
  const plain = /^https?:$/.test(url.protocol) && !url.username && !url.password && !url.search && !url.hash;
  if (plain && (url.origin === location.origin || allowed.includes(baseKey(url)))) return baseKey(url);
  throw new PageError(
    `Refused the API base ${quotedUrl(url)}: this page sends your messages and sign-in token only to this site (${location.origin}) ` +
      `and to the API bases its deployment lists (${allowed.length > 0 ? allowed.join(", ") : "none"}). Nothing was sent there.`,
  );
}

/** Sends every later call to `raw`, if allowed; throws the PageError of allowedBase otherwise. */
function useBase(raw) {
  const base = allowedBase(raw, state.allowedBases);
  ui.apiBase.value = base;
  update({ base });
  return base;
}

/**
 * Reads what the deployment serves the page (its API bases, the API's error codes), then takes
 * the base of the page's address (`?api=`) if it is allowed; the page is ready after that.
 * Until then only the page's own origin is allowed.
 */
const deploymentRead = Promise.all([deploymentBases(), apiErrorCodes(), deploymentAppCheck()]).then(([allowedBases, errorCodes, appCheck]) => {
  update({ allowedBases, errorCodes, appCheck });
  const asked = params.get("api");
  if (asked) {
    try {
      useBase(asked);
    } catch (error) {
      update({ error: `${error instanceof Error ? error.message : String(error)} This site's own API is used instead.` });
    }
  }
  update({ ready: true });
});

// ---------------------------------------------------------------------------------------------
// Identity: none until the server answers 401, then Firebase Auth, anonymous sign-in
// ---------------------------------------------------------------------------------------------

/** Loads a script; one that fails to load leaves no element behind, so a later attempt adds a fresh one. */
function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = () => resolve(undefined);
    script.onerror = () => {
      script.remove();
      reject(new Error(`could not load ${src}`));
    };
    document.head.append(script);
  });
}

/** @type {Map<string, Promise<unknown>>} the Firebase SDK's scripts, loaded or loading, by name */
const loadedScripts = new Map();

/**
 * Loads the script `name` once, however many callers need it. A load that failed is forgotten:
 * it was a network's hiccup or a deploy under way as often as not, and kept it would fail every
 * later sign-in until the page is reloaded; the next caller loads it again.
 */
function loadOnce(name, src) {
  let loading = loadedScripts.get(name);
  if (!loading) {
    loading = loadScript(src).catch((error) => {
      loadedScripts.delete(name);
      throw error;
    });
    loadedScripts.set(name, loading);
  }
  return loading;
}

/** @type {Promise<void> | undefined} the sign-in under way or done */
let signingIn;

/** @type {string | undefined} the uid of the page's last sign-in: a sign-in that gives another one is another user's */
let signedInUid;

/**
 * The Firebase JS SDK's compat app and `component` ("auth", "app-check") from Hosting's reserved
 * URLs (deployed, Hosting serves the SDK and the project's config there; `npm start` serves the
 * installed SDK and a config of its own), the app initialised once by /__/firebase/init.js. Each
 * script is loaded once, whichever of sign-in and App Check needs the SDK first.
 */
async function loadFirebase(component) {
  const base = `/__/firebase/${FIREBASE_SDK_VERSION}`;
  await loadOnce("app", `${base}/firebase-app-compat.js`);
  await loadOnce(component, `${base}/firebase-${component}-compat.js`);
  await loadOnce("init", "/__/firebase/init.js");
}

/**
 * Signs the visitor in anonymously with the Firebase Auth web SDK. The emulator, locally, is the
 * one the server itself checks tokens on, as its init.js says; never one the page's address
 * names, since the stored user's ID token goes to it.
 */
async function signIn(gone) {
  // One sign-in however many requests meet a 401 at once (the list read at start, a session started meanwhile).
  signingIn ??= signInOnce(gone).catch((error) => {
    signingIn = undefined;
    throw error;
  });
  return signingIn;
}

/** `gone`: the account whose ID token can no longer be had (idToken), if that is why the page signs in. */
async function signInOnce(gone) {
  await loadFirebase("auth");
  // @ts-ignore: the compat SDK is a global
  const auth = window.firebase.auth();
  // @ts-ignore: set by the local server's init.js only
  const emulator = typeof window.CHATIFY_AUTH_EMULATOR === "string" ? window.CHATIFY_AUTH_EMULATOR : undefined;
  if (emulator && !auth.emulatorConfig) auth.useEmulator(`http://${emulator}`, { disableWarnings: true });
  // signInAnonymously() gives back the current user while it is anonymous, gone or not, and the SDK
  // (firebase 12.19.0) signs a user out by itself on auth/user-disabled and auth/user-token-expired
  // only, not on auth/invalid-refresh-token (a deleted account): such a user is signed out first.
  if (gone && auth.currentUser?.uid === gone.uid) await auth.signOut();
  const credential = await auth.signInAnonymously();
  const { uid } = credential.user;
  const before = signedInUid;
  signedInUid = uid;
  // The server takes the token's user as the session's owner: a different body user_id is refused.
  ui.user.value = uid;
  update({ signedIn: { account: credential.user, emulator } });
  // Signed in anew as another user (the old anonymous account deleted or disabled): nothing of the
  // old user's can be reached by the new one (403 FORBIDDEN), as after a change of user id. The
  // session on view, the old user's (its owner), is left by update: at once when the page is idle
  // in it, else when the call under way in it ends.
  if (before !== undefined && before !== uid) readListAnew();
}

// ---------------------------------------------------------------------------------------------
// App Check: a token with each call when the deployment names a provider
// ---------------------------------------------------------------------------------------------

/**
 * @typedef {{ getToken(limitedUse?: boolean): Promise<{ token: string }> }} AppCheckProvider
 * @type {Promise<{ appCheck: { getToken(): Promise<{ token: string }> }, provider: AppCheckProvider }> | undefined}
 * App Check once activated, and the provider it was activated with
 */
let appCheckClient;

/**
 * Activates App Check with the deployment's provider: reCAPTCHA Enterprise and its site key.
 * A page that embeds this one may supply a provider of its own instead, as
 * `window.chatifyAppCheckProvider` (a function returning `{ token, expireTimeMillis }`): the
 * browser test does, since reCAPTCHA and the debug provider both need Google. Whoever can set it
 * can already run script in the page, so it opens nothing; the server verifies every token.
 */
async function activateAppCheck(siteKey) {
  await loadFirebase("app-check");
  // @ts-ignore: the compat SDK is a global; the hook is set by an embedding page or a test
  const { firebase, chatifyAppCheckProvider: custom } = window;
  const provider = typeof custom === "function"
    ? new firebase.appCheck.CustomProvider({ getToken: () => custom() })
    : new firebase.appCheck.ReCaptchaEnterpriseProvider(siteKey);
  const appCheck = firebase.appCheck();
  // Tokens are refreshed before they expire, while the page is open.
  appCheck.activate(provider, true);
  update({ attestedWith: typeof custom === "function" ? "the page's own provider" : "reCAPTCHA Enterprise" });
  return { appCheck, provider };
}

/**
 * The App Check token for the next call, or undefined when the deployment names no provider:
 * the one App Check keeps (and refreshes) for every call, or with `limitedUse` a limited-use token
 * of its own, for a call the server consumes the token of (a message, with replay protection),
 * which would refuse the kept one from its second use on, for the rest of its hour.
 * The compat SDK the page loads (firebase 12.19.0, @firebase/app-check-compat 0.4.7) has no
 * getLimitedUseToken; the modular one (@firebase/app-check 0.13.1 `getLimitedUseToken`) is,
 * outside debug mode (which the page never uses), the activated provider's `getToken(true)`: an
 * attestation and exchange marked `limited_use`, kept nowhere. So the page calls that itself.
 */
async function appCheckToken(limitedUse = false) {
  const { appCheck } = state;
  if (appCheck.provider === "none") return undefined;
  // An activation that failed (its SDK script did not load) is forgotten, as a failed load is: the next call activates again.
  appCheckClient ??= activateAppCheck(appCheck.siteKey).catch((error) => {
    appCheckClient = undefined;
    throw error;
  });
  try {
    const { appCheck: client, provider } = await appCheckClient;
    return (await (limitedUse ? provider.getToken(true) : client.getToken())).token;
  } catch (error) {
    // No full stop: errorText ends the sentence.
    throw new PageError(`App Check could not attest this page: ${errorMessage(error)}. Nothing was sent; try again in a moment`);
  }
}

/**
 * How long the page waits for the head of an answer (its status line and headers) before it gives
 * the request up. The server writes nothing before it has an answer: a message's stream, and its
 * heartbeats, open only with the reply's first text (docs/api.md), so that a failure before it
 * keeps its status and JSON body. A link gone dead before the first byte came back (a phone
 * between cells, a NAT that dropped its mapping) would otherwise keep the page waiting for ever,
 * a message's box disabled; once the head came, a stream's silence is bounded by
 * STREAM_SILENCE_MS. The limit must exceed the longest a request may run before its answer: the
 * function's timeout (`TIMEOUT_SECONDS`), which the platform ends with a 504 and within which a
 * message's time budget (the model's attempts, its retries, moderation beside them, the database
 * calls) must fit (docs/time-budget.md). That is 60 s with the defaults, and 60 s at most behind
 * Hosting (the page's own /api/v1 routes), whatever the function's: Firebase's Hosting
 * documentation gives a request it rewrites to a function 60 s, then answers 504. The page cannot
 * read the deployment's timeout: 90 s is those 60 s and a margin for a cold start and a slow
 * link's connection and upload. A page that calls the function URLs (?api=) of a deployment with
 * a longer TIMEOUT_SECONDS gives a slow message up too soon (it may have been stored: sent again
 * with its key, it gets the stored reply); raise this above that timeout there.
 */
const ANSWER_HEAD_MS = 90_000;

/** A request given up on: no head of its answer came within ANSWER_HEAD_MS. It was sent, so it may have been done. */
class NoAnswerError extends Error {}

/**
 * fetch, given up (rejected with a NoAnswerError) when the head of its answer has not come
 * within ANSWER_HEAD_MS. The body is not bounded here: a stream's may take a reply's time, read
 * under readEvents' own bound.
 */
async function fetchWithinHeadLimit(url, init) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), ANSWER_HEAD_MS);
  try {
    return await fetch(url, { ...init, signal: controller.signal });
  } catch (error) {
    throw controller.signal.aborted ? new NoAnswerError(`no answer came within ${ANSWER_HEAD_MS / 1000} s`) : error;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * fetch with the visitor's App Check token when the deployment names a provider, and ID token
 * when signed in. A 401 UNAUTHENTICATED before any sign-in
 * signs in, then sends the request once more (nothing was done: the server refused it first).
 * `json`, a function, makes the body at each send, and `url` may be one too: signing in may
 * change what they must say. `limitedUseToken`: each send gets a limited-use App Check token of
 * its own (appCheckToken), for a call whose token the server consumes.
 */
async function apiFetch(url, { method, headers = {}, json, limitedUseToken = false }) {
  /** Whether the last send carried an ID token: a 401 to one sent without asks for the sign-in, even one another request finished meanwhile. */
  let sentWithToken = false;
  /** The account whose ID token could no longer be had at the last send (idToken): nothing was sent. */
  let gone;
  const send = async () => {
    const all = new Headers(headers);
    const attestation = await appCheckToken(limitedUseToken);
    if (attestation) all.set("X-Firebase-AppCheck", attestation);
    const target = typeof url === "function" ? url() : url;
    sentWithToken = Boolean(state.signedIn);
    if (state.signedIn) {
      const { account } = state.signedIn;
      const token = await idToken(account);
      // The account is gone: nothing sent, the sign-in below makes a new one.
      if (token === undefined) {
        gone = account;
        return undefined;
      }
      all.set("Authorization", `Bearer ${token}`);
    }
    if (!json) return fetchWithinHeadLimit(target, { method, headers: all });
    all.set("Content-Type", "application/json");
    return fetchWithinHeadLimit(target, { method, headers: all, body: JSON.stringify(json()) });
  };
  const response = await send();
  // Only a missing ID token asks for a sign-in (a 401 may be App Check's too). A request sent before
  // another one's sign-in finished (the list read at start, a session started meanwhile) is sent again with the token.
  if (response && (response.status !== 401 || sentWithToken || (await readJson(response.clone()))?.error?.code !== "UNAUTHENTICATED")) return response;
  try {
    update({ status: response ? "The server asks who you are: signing in with Firebase Auth ..." : "Your sign-in ended: signing in again with Firebase Auth ..." });
    await signIn(gone);
    update({ status: "Signed in anonymously with Firebase Auth." });
  } catch (error) {
    throw new PageError(
      `This server requires a Firebase ID token, and signing in failed: ${errorMessage(error)}. ` +
        // No full stop: errorText ends the sentence.
        "Locally, run the Auth emulator and start the server with FIREBASE_AUTH_EMULATOR_HOST set to it (see the README)",
    );
  }
  const again = await send();
  // No full stop: errorText ends the sentence.
  if (!again) throw new PageError("Your sign-in ended, and the new one could not be used. Nothing was sent; try again in a moment");
  return again;
}

/**
 * The errors of getIdToken() that say the account can no longer sign in (Firebase JS SDK 12.19.0):
 * deleted (Auth's clean-up of inactive anonymous users, or an admin), disabled, or its refresh
 * token revoked. The page signs in anew, as a new anonymous user.
 */
const ACCOUNT_GONE = new Set(["auth/invalid-refresh-token", "auth/user-token-expired", "auth/user-not-found", "auth/user-disabled"]);

/**
 * The signed-in account's ID token (refreshed by the SDK once near its hour), or undefined when
 * the account is gone: the sign-in is then forgotten, so that the next signIn(account) makes a new one.
 * Any other failure (the token service unreachable) is the page's own: nothing was sent.
 */
async function idToken(account) {
  try {
    return await account.getIdToken();
  } catch (error) {
    const code = typeof error === "object" && error !== null && "code" in error ? error.code : undefined;
    if (!ACCOUNT_GONE.has(code)) {
      // No full stop: errorText ends the sentence.
      throw new PageError(`Your sign-in could not be renewed: ${errorMessage(error)}. Nothing was sent; try again in a moment`);
    }
    // Another request may have found it gone first, and signed in again already.
    if (state.signedIn?.account === account) {
      signingIn = undefined;
      update({ signedIn: undefined });
    }
    return undefined;
  }
}

/** An error's message without its closing full stop (Firebase's end with one), for a sentence that goes on. */
function errorMessage(error) {
  return (error instanceof Error ? error.message : String(error)).replace(/\.$/, "");
}

// ---------------------------------------------------------------------------------------------
// Errors, said as a person would want to read them
// ---------------------------------------------------------------------------------------------

/**
 * @typedef {{ code: string, message: string, status?: number, retryAfter?: string | null }} Failure
 * What went wrong: the API's code and message (code "" when there was no API answer), with the
 * answer's status and Retry-After when it came as a whole answer (a streamed `error` event has no
 * status of its own, the API lists the code's, and gives its wait as `retry_after_seconds`).
 */

/**
 * A failure from an API answer's JSON error body (`{success: false, error: {code, message}}`).
 * Without one (code ""), the body was cut on the way back or came from something between: a 2xx
 * so says that the server did what was asked, and its body was lost.
 */
function answerFailure(body, response) {
  const fallback = response.ok ? `The answer (HTTP ${response.status}) did not arrive whole` : `HTTP ${response.status}`;
  return {
    code: typeof body?.error?.code === "string" ? body.error.code : "",
    message: typeof body?.error?.message === "string" ? body.error.message : fallback,
    status: response.status,
    retryAfter: response.headers.get("Retry-After"),
  };
}

/** A failure before or without any API answer. */
function pageFailure(error, what) {
  return { code: "", message: error instanceof PageError ? error.message : `${what}: ${error instanceof Error ? error.message : String(error)}` };
}

/**
 * The codes after which the session is over, with the status line that says so: the page goes
 * back to its start form. SESSION_NOT_FOUND, answered to a message or an end, is a session that
 * no longer exists (its user's data erased, from another tab or device; or deleted once kept its
 * SESSION_RETENTION_DAYS): nothing more can be done in it. FORBIDDEN, answered about a session,
 * is one the signed-in user does not own: the page signed in anew as a new anonymous user (the old
 * account deleted or disabled), and the session is the old user's, refused to the new one for good.
 */
const SESSION_OVER = new Map([
  ["SESSION_ENDED", "The session has ended."],
  ["SESSION_EXPIRED", "The session expired."],
  ["SESSION_NOT_FOUND", "The session no longer exists."],
  ["FORBIDDEN", "The session is not the signed-in user's."],
]);

/**
 * The codes after which what a call asked for may have been done all the same (docs/api.md): the
 * database did not answer (a write queued meanwhile may land), or the first request with the same
 * Idempotency-Key is still running.
 */
const FATE_UNKNOWN = new Set(["DATABASE_UNAVAILABLE", "IDEMPOTENCY_IN_PROGRESS"]);

/**
 * Whether a call that failed so may have been done all the same (a start or a message stored, a
 * connection's message sent, an erasure run): no API error body said otherwise, or its code says
 * so. Only the API's own error (its JSON body, with a code) is a refusal the server decided; any
 * other failure (no answer, an answer whose body was cut on the way back, even after a 2xx status
 * line arrived, or an answer from something between) says nothing of what the server did. Sent
 * again with its key, the call is then answered with what was stored.
 */
function mayBeStored(failure) {
  if (failure.code === "") return true;
  return FATE_UNKNOWN.has(failure.code);
}

/**
 * The page's own words for the errors a visitor acts on, by code. Any other code is said with
 * the server's message; whether a wait follows, and a code's status, come from the API's list
 * (state.errorCodes), never from here.
 */
const SAID = new Map([
  ["SESSION_ENDED", () => "This session has ended. Start a new one to keep chatting."],
  ["SESSION_EXPIRED", () => "This session expired after being idle. Start a new one to keep chatting."],
  ["SESSION_NOT_FOUND", () => "This session no longer exists (its data was erased, or it was deleted after its retention period). Start a new one to keep chatting."],
  ["SESSION_EXCHANGE_LIMIT", () => "This session holds all the messages it may. Start a new one to keep chatting."],
  ["MODEL_UNAVAILABLE", () => "The model is unavailable right now."],
  ["MODEL_TIMEOUT", () => "The model took too long to answer."],
  ["DATABASE_UNAVAILABLE", () => "The database did not answer."],
  ["UNAUTHENTICATED", (message) => `Sign-in needed: ${message}.`],
  ["APP_CHECK_REQUIRED", () => "This site answers only its own app, and this page sent no App Check token: its deployment names no App Check provider for it."],
  // Not "reload": App Check brings back the token it stored for the browser until it nears expiry. With
  // the page and the server set up alike no token is refused (a message's is limited-use, fresh each time):
  // the site's owner can fix it, the visitor cannot.
  ["APP_CHECK_INVALID", () => "This site answers only its own app, and refused the App Check token this page sent, so nothing was done. Reloading will not help: the site's App Check setup does not match this page. Let the site's owner know."],
  ["MESSAGE_FLAGGED", () => "Your message was not sent: moderation flagged it. Nothing was stored."],
]);

/** A Retry-After (seconds or an HTTP date) in seconds from now, or undefined without a usable one. */
function retryAfterSeconds(retryAfter) {
  if (!retryAfter) return undefined;
  let seconds = Number(retryAfter);
  if (!Number.isFinite(seconds)) seconds = Math.max(0, Math.round((Date.parse(retryAfter) - Date.now()) / 1000));
  return Number.isFinite(seconds) ? seconds : undefined;
}

/** A Retry-After (seconds or an HTTP date) as a sentence, or undefined without a usable one. */
function waitText(retryAfter) {
  const seconds = retryAfterSeconds(retryAfter);
  if (seconds === undefined) return undefined;
  if (seconds < 90) return `Try again in ${seconds} s.`;
  if (seconds < 90 * 60) return `Try again in ${Math.ceil(seconds / 60)} min.`;
  return `Try again in ${Math.ceil(seconds / 3600)} h.`;
}

/**
 * The sentence for a failure: the page's words for its code, else "Slow down" for a usage limit
 * (429), else the server's message with its code; then, where the API lists the code's
 * Retry-After as a wait, that wait (or, without one, a hint to try again).
 */
function errorText(failure) {
  const { code, message } = failure;
  const facts = state.errorCodes.get(code);
  const status = failure.status ?? facts?.status;
  const said =
    SAID.get(code)?.(message) ??
    (status === 429 ? `Slow down: ${message}.` : `${message}${code ? ` (${code}${status ? `, HTTP ${status}` : ""})` : ""}.`);
  if (facts?.retryAfter !== "wait") return said;
  return `${said} ${waitText(failure.retryAfter) ?? (status === 429 ? "Try again later." : "Try again in a moment.")}`;
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events over fetch
// ---------------------------------------------------------------------------------------------

/**
 * How long a stream may stay silent, not a byte arriving, before the page takes it for a dead
 * connection: two periods of the server's heartbeat (docs/api.md: `: keep-alive` at least every
 * 15 s). A link gone dead without a reset (a phone between cells, a NAT that dropped its mapping)
 * would otherwise leave the reply streaming, and the message box disabled, for ever.
 */
const STREAM_SILENCE_MS = 30_000;

/**
 * Reads a `text/event-stream` body, calling `onEvent(name, data)` per event with its `data:`
 * parsed as JSON. Comment lines (`: keep-alive` heartbeats) and other fields are ignored, as the
 * SSE format says, though their bytes show the connection alive. Returns when the stream ends,
 * when it stayed silent for STREAM_SILENCE_MS (cut: the caller sees no last event), or as soon as
 * `onEvent` returns true (the last event the caller needs): the rest is not read, so a connection
 * cut after that event (before the body's end came) fails nothing.
 */
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  const dispatch = (block) => {
    let name = "message";
    const data = [];
    for (const line of block.split(/\r\n|\r|\n/)) {
      if (line === "" || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    return data.length > 0 && onEvent(name, JSON.parse(data.join("\n"))) === true;
  };
  for (;;) {
    let timer;
    const silence = new Promise((resolve) => {
      timer = setTimeout(() => resolve(undefined), STREAM_SILENCE_MS);
    });
    const read = await Promise.race([reader.read(), silence]);
    clearTimeout(timer);
    if (read === undefined) {
      // A dead link: let it go. The caller, without its last event, takes it as a cut.
      reader.cancel().catch(() => undefined);
      return;
    }
    const { value, done } = read;
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    // An event ends at a blank line.
    let match;
    while ((match = /\r\n\r\n|\n\n|\r\r/.exec(buffered))) {
      const last = dispatch(buffered.slice(0, match.index));
      buffered = buffered.slice(match.index + match[0].length);
      if (last) {
        // Nothing more is wanted: let the connection go, whatever becomes of it.
        reader.cancel().catch(() => undefined);
        return;
      }
    }
  }
  buffered += decoder.decode();
  if (buffered.trim() !== "") dispatch(buffered);
}

// ---------------------------------------------------------------------------------------------
// The conversation
// ---------------------------------------------------------------------------------------------

/** Appends an entry to the log; returns it and its text, which a streamed reply fills in. */
function addEntry(role, who, text) {
  const item = document.createElement("li");
  item.className = role;
  const name = document.createElement("span");
  name.className = "who";
  name.textContent = who;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  item.append(name, body);
  ui.log.append(item);
  item.scrollIntoView({ block: "end" });
  return { item, body };
}

function addNote(item, text) {
  const note = document.createElement("span");
  note.className = "note";
  note.textContent = text;
  item.append(note);
}

function newUserId() {
  // getRandomValues, not randomUUID: the page may be opened over plain http from a phone on the LAN.
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return `user_${Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("")}`;
}

/** A fresh Idempotency-Key: 128 random bits in hex (getRandomValues, as for the user id: randomUUID needs a secure context). */
function newIdempotencyKey() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

function rememberedUserId() {
  try {
    const saved = localStorage.getItem("chatify.user_id");
    if (saved) return saved;
    const fresh = newUserId();
    localStorage.setItem("chatify.user_id", fresh);
    return fresh;
  } catch {
    return newUserId(); // storage refused (private mode): a fresh id per visit
  }
}

async function startSession(event) {
  event.preventDefault();
  if (waiting()) return;
  const userId = ui.user.value.trim();
  if (!userId && !state.signedIn) {
    update({ error: "Enter a user id (any name of up to 128 characters)." });
    ui.user.focus();
    return;
  }
  const before = state.phase;
  update({ phase: "starting", error: "", listError: "", status: "Starting a session ..." });
  const urls = apiUrls(state.base);
  const templateId = ui.template.value;
  // Signed in, the token names the user: the body's user_id must be the same (or absent).
  const owner = () => (state.signedIn ? state.signedIn.account.uid : userId);
  // The server scopes a create's key to its user, and holds it to the personality: the kept key
  // goes only with the same user and personality.
  const kept = state.startKey;
  const key = kept && kept.owner === owner() && kept.templateId === templateId ? kept.key : newIdempotencyKey();
  let failure;
  let unsure;
  try {
    const response = await apiFetch(urls.create, {
      method: "POST",
      headers: { "Idempotency-Key": key },
      json: () => ({ user_id: owner(), template_id: templateId }),
    });
    const body = await readJson(response);
    if (response.ok && body?.success) {
      try {
        localStorage.setItem("chatify.user_id", body.user_id);
      } catch {
        // Not remembered: fine.
      }
      ui.log.replaceChildren();
      update({
        phase: "active",
        // Its owner as the server took it: the token's user, who may no longer be the signed-in one.
        // Sent with a token once the page has signed in (signedInUid), even while a sign-in anew is
        // under way and `signedIn` is unset: its answer may land then.
        session: { id: body.session_id, templateName: body.template_name, messageCount: 0, tokens: 0, ...(signedInUid !== undefined ? { owner: body.user_id } : {}) },
        earlier: null,
        startKey: undefined,
        status: `Session ${body.session_id} started.`,
      });
      ui.message.focus();
      void loadConversations();
      return;
    }
    failure = answerFailure(body, response);
    unsure = mayBeStored(failure);
  } catch (error) {
    failure = pageFailure(error, `Could not reach the API at ${urls.create}`);
    // Refused by the page before anything was sent (App Check, signing in), or lost on the way: sent, maybe done.
    unsure = !(error instanceof PageError);
  }
  // Kept for the next start (signing in may have changed the owner meanwhile), unless the server refused the key itself.
  const startKey = failure.code === "IDEMPOTENCY_KEY_REUSED" ? undefined : { owner: owner(), templateId, key };
  update({
    phase: before,
    startKey,
    error: unsure ? `${errorText(failure)} The session may have been made all the same: starting again is safe, it gets that session back.` : errorText(failure),
    status: "No session.",
  });
  // Start session, disabled while the start ran, lost the focus: it takes it back, to start again.
  if (focusLost()) ui.startButton.focus();
}

/** The session is over (ended here, or found ended, expired or gone): back to the start form. */
function closeSession(changes) {
  update({ phase: "ended", ...changes });
  ui.startButton.focus();
}

/** A reply whose answer stopped coming before its last event, or never began: the message may have been stored. */
const CUT_SHORT = Object.freeze({ code: "", message: "The connection closed before the reply was complete" });

/**
 * Sends `text` with its Idempotency-Key and reads the answer: the reply's deltas into `onText` as
 * they come, then the finished reply (the `done` event, or a whole JSON answer: `replayed` when
 * it is the answer an earlier send with the key got), or a failure, `unsure` when the message
 * may have been stored all the same (the server does not stop when the client stops listening).
 * @returns {Promise<{ finished: any, replayed: boolean } | { failure: Failure, unsure: boolean }>}
 */
async function exchange(sessionId, text, key, onText) {
  const failed = (failure) => ({ failure, unsure: mayBeStored(failure) });
  try {
    const response = await apiFetch(apiUrls(state.base).message(sessionId), {
      method: "POST",
      headers: { Accept: "text/event-stream", "Idempotency-Key": key },
      json: () => ({ message: text }),
      // With replay protection the server consumes a message's token (and only a message's: src/http/app-check-gate.ts).
      limitedUseToken: state.appCheck.provider === "recaptcha-enterprise" && state.appCheck.replayProtection,
    });
    if (!(response.headers.get("Content-Type") ?? "").startsWith("text/event-stream")) {
      // A JSON answer: an error decided before the reply began, a replay (always JSON, streamed
      // or not), or a server (or a Hosting route) that answered without a stream.
      const body = await readJson(response);
      return response.ok && body?.success ? { finished: body, replayed: response.headers.get("Idempotent-Replayed") === "true" } : failed(answerFailure(body, response));
    }
    let received = "";
    let outcome;
    await readEvents(response, (name, data) => {
      if (name === "delta" && typeof data.text === "string") {
        received += data.text;
        onText(received);
      } else if (name === "done") {
        outcome = { finished: data, replayed: false };
      } else if (name === "error") {
        const wait = data?.error?.retry_after_seconds;
        outcome = failed({ code: String(data?.error?.code ?? ""), message: String(data?.error?.message ?? "The reply failed"), retryAfter: typeof wait === "number" ? String(wait) : null });
      }
      // The reply's last event: the answer is decided, whatever the connection does after it.
      return outcome !== undefined;
    });
    // Cut before its last event: the server writes the reply to its end and stores it all the same.
    return outcome ?? failed(CUT_SHORT);
  } catch (error) {
    // No head of the answer within ANSWER_HEAD_MS: the request went, and the server may have stored the exchange, as after a cut.
    if (error instanceof NoAnswerError) return failed(CUT_SHORT);
    // Refused by the page before anything was sent (App Check, signing in), or lost on the way: sent, maybe stored.
    return { failure: pageFailure(error, "Could not reach the API"), unsure: !(error instanceof PageError) };
  }
}

async function sendMessage(event) {
  event.preventDefault();
  const { session } = state;
  if (!canWrite() || !session) return;
  const text = ui.message.value;
  if (text.trim() === "") {
    ui.message.focus();
    return;
  }
  // The text given back after a failure, sent again unchanged, goes with its key: if the first send
  // was stored, this one gets its reply back. Any other text is a new message, with a new key.
  const kept = state.unsent;
  const key = kept && kept.sessionId === session.id && kept.text === text ? kept.key : newIdempotencyKey();
  const asked = addEntry("user", "You", text);
  ui.message.value = "";
  const reply = addEntry("assistant", session.templateName, "");
  reply.item.classList.add("streaming");
  update({ phase: "streaming", unsent: undefined, error: "", listError: "", status: `${session.templateName} is writing ...` });

  let shown = "";
  const outcome = await exchange(session.id, text, key, (received) => {
    shown = received;
    reply.body.textContent = received;
    reply.item.scrollIntoView({ block: "end" });
  });
  if (!stillHeld("streaming", session)) return;
  reply.item.classList.remove("streaming");

  if ("finished" in outcome) {
    const { finished } = outcome;
    // A replay of an exchange the session on view already holds (opened again from the list after
    // the first send was cut): its history shows it, in its place, and its tokens count it.
    const held = outcome.replayed && finished.message_count <= session.messageCount;
    if (held) {
      asked.item.remove();
      reply.item.remove();
    } else {
      reply.body.textContent = finished.response;
      if (finished.truncated) addNote(reply.item, "(cut at the personality's length limit)");
    }
    const messageCount = held ? session.messageCount : finished.message_count;
    update({
      phase: "active",
      // The session's tokens so far, as the replies report them (the end's answer gives the full total, summaries included).
      session: {
        ...session,
        messageCount,
        tokens: session.tokens + (held ? 0 : (finished.usage?.total_tokens ?? 0)),
        ...(session.messageCount === 0 && session.firstMessage === undefined ? { firstMessage: text } : {}),
      },
      // A replay is the reply stored for an earlier send of this text, shown as any reply is.
      status: `${outcome.replayed ? "Reply complete: the one stored when you first sent this message." : "Reply complete."} Messages: ${messageCount}.`,
    });
    ui.message.focus();
    void loadConversations();
    return;
  }
  const { failure, unsure } = outcome;
  reply.item.classList.add("failed");
  if (shown === "") reply.body.textContent = "(no reply)";
  addNote(reply.item, unsure ? "(the reply may have been stored: send the message again to get it)" : "(not stored)");
  // Its text goes back, for the visitor to send again.
  ui.message.value = text;
  const over = SESSION_OVER.get(failure.code);
  if (over) {
    // Without its key: it can only be sent in another session, where it is a new message.
    closeSession({ error: errorText(failure), status: over });
    // The list says it too (ended, expired, or no longer there).
    void loadConversations();
    return;
  }
  // With its key (unless the server refused the key itself): sent again, the message is stored
  // once, whether or not this send was.
  update({
    phase: "active",
    unsent: failure.code === "IDEMPOTENCY_KEY_REUSED" ? undefined : { sessionId: session.id, text, key },
    error: unsure
      ? `${errorText(failure)} Your message may have been stored all the same: sending it again is safe, it gets the stored reply back rather than a second one.`
      : errorText(failure),
    status: unsure ? "The reply did not arrive." : "The reply failed.",
  });
  ui.message.focus();
}

async function endSession() {
  const { session } = state;
  if (!canWrite() || !session) return;
  update({ phase: "ending", error: "", listError: "" });
  let body;
  let failure;
  try {
    const response = await apiFetch(apiUrls(state.base).end(session.id), { method: "DELETE" });
    body = await readJson(response);
    if (!response.ok || !body?.success) failure = answerFailure(body, response);
  } catch (error) {
    failure = pageFailure(error, "Could not reach the API");
  }
  if (!stillHeld("ending", session)) return;
  if (!failure) {
    const count = body.message_count;
    closeSession({
      session: { ...session, messageCount: count, tokens: body.usage ? body.usage.total_tokens : session.tokens },
      status: `Session ended: ${count} message${count === 1 ? "" : "s"} in ${Math.round(body.duration_seconds)} s.`,
    });
    void loadConversations();
    return;
  }
  const over = SESSION_OVER.get(failure.code);
  if (!over) {
    update({ phase: "active", error: errorText(failure) });
    // End session, disabled while the end ran, lost the focus: it takes it back, to end again.
    if (focusLost()) ui.endButton.focus();
    return;
  }
  // Ended or expired meanwhile (another tab, the idle timeout): already over; not found: gone; forbidden: the previous user's.
  const already = failure.code === "SESSION_ENDED" || failure.code === "SESSION_EXPIRED";
  closeSession({ error: errorText(failure), status: already ? "The session was already over." : over });
  void loadConversations();
}

// ---------------------------------------------------------------------------------------------
// Your conversations: the list, one read again (and a reply still being written picked up), your data
// ---------------------------------------------------------------------------------------------

/** How often a reply written by a request this page no longer holds is read again. */
const WATCH_MS = 400;

/**
 * How many reads in a row following such a reply may fail for a moment (a 5xx, such as the
 * database's 503 with its Retry-After, or no answer) before the page gives up following it.
 */
const WATCH_RETRIES = 5;

/** The longest Retry-After the following waits out; a longer wait gives up at once. */
const WATCH_LONGEST_WAIT_MS = 10_000;

/** A failure that may pass if the read is made again: no answer, or a 5xx (the database or the model slow for a moment). */
function isTransient(failure) {
  return failure.status === undefined || failure.status >= 500;
}

/** `url` with the user named as the server needs: by the token when signed in, else by `user_id`. */
function asOwner(url, extra = {}) {
  const params = new URLSearchParams(extra);
  if (!state.signedIn) params.set("user_id", ui.user.value.trim());
  const query = params.toString();
  return query ? `${url}?${query}` : url;
}

/** GET `url` as the user; the JSON answer, or a failure. */
async function getJson(url, extra = {}) {
  try {
    const response = await apiFetch(() => asOwner(url, extra), { method: "GET" });
    const body = await readJson(response);
    return response.ok && body?.success ? { body } : { failure: answerFailure(body, response) };
  } catch (error) {
    return { failure: pageFailure(error, "Could not reach the API") };
  }
}

/**
 * The list's generation: bumped by each read from the first page, by an erasure and by a change of
 * user id. An answer read under an older one says what was, or whose it was: it is dropped.
 */
let listGeneration = 0;
/** @type {string | null} the cursor of the older page being read, while one is: a second click asks nothing more */
let readingOlder = null;

/** @type {string | undefined} the user id the list shown was read for */
let listedFor;

/**
 * The reads of the list under way, also on `<body data-list-reads>`: at 0, every answer asked for
 * has been acted on (shown or dropped), which a watcher can wait for.
 */
let listReadsPending = 0;

/** Whose list is read: the field's user id (the signed-in user's uid once signed in). */
const listOwner = () => ui.user.value.trim();

/**
 * `first`, then the entries of `rest` it does not hold (by `idOf`): a first page read again with
 * the older pages shown kept after it, or an older page added without what is listed already.
 * (Shared with the People panel.)
 * @template T
 * @param {T[]} first
 * @param {T[]} rest
 * @param {(entry: T) => string} idOf
 * @returns {T[]}
 */
function mergedById(first, rest, idOf) {
  const held = new Set(first.map(idOf));
  return [...first, ...rest.filter((entry) => !held.has(idOf(entry)))];
}

/** @param {ListedConversation} conversation */
const sessionIdOf = (conversation) => conversation.session_id;

/** Whether the list shows older pages ("Show older conversations") of the user it was read for. */
let olderShown = false;

/** Drops any read of the list under way: the data was erased, or the user id changed. */
function dropListReads() {
  listGeneration++;
  readingOlder = null;
  olderShown = false;
}

/** Reads the list again from its first page, for the user now named, any read under way dropped. */
function readListAnew() {
  dropListReads();
  void loadConversations();
}

/**
 * Reads the user's conversations again from the first page, or (`more`) the next page after those
 * shown. An answer is shown only while it is still the list's: a read from the first page made
 * since, an erasure or another user id drops it, and an older page lands only while its cursor is
 * still the one the list ends with (a double click, or two pages of one cursor, add nothing twice).
 */
async function loadConversations(more = false) {
  if (!ui.user.value.trim() && !state.signedIn) return;
  const cursor = more ? state.conversationsNext : null;
  // An older page of another user's list is not asked for: the new user's first page is on its way.
  if (more && (cursor === null || readingOlder === cursor || listedFor !== listOwner())) return;
  const generation = more ? listGeneration : ++listGeneration;
  if (more) readingOlder = cursor;
  document.body.dataset.listReads = String(++listReadsPending);
  try {
    const outcome = await getJson(apiUrls(state.base).list, cursor ? { cursor } : {});
    if (more && readingOlder === cursor) readingOlder = null;
    if (generation !== listGeneration || (more && state.conversationsNext !== cursor)) return;
    if ("failure" in outcome) {
      // A cursor refused (the cursor secret deleted: docs/conversations.md, Cursors) stays refused:
      // the list starts again from its first page, the older pages shown dropped, and the next
      // click follows the fresh page's cursor. Nothing went wrong for the visitor: nothing is said.
      if (more && outcome.failure.code === "INVALID_CURSOR") readListAnew();
      else update({ listError: errorText(outcome.failure) });
      return;
    }
    const page = outcome.body.sessions.map(withWhatThisPageKnows);
    const owner = listOwner();
    if (more) {
      olderShown = true;
      const shown = state.conversations?.length ?? 0;
      update({ listError: "", conversations: mergedById(state.conversations ?? [], page, sessionIdOf), conversationsNext: outcome.body.next_cursor });
      // The last page shown, Show older conversations went with the focus: the first conversation it added takes it.
      if (focusLost()) focusInList(state.conversations?.[shown]?.session_id ?? "", shown);
    } else if (olderShown && listedFor === owner) {
      // Older pages on view stay (read again after each start, reply and end, the list would drop
      // them): the fresh first page, then those shown that it does not hold; the cursor still
      // follows the last page shown.
      update({ listError: "", conversations: mergedById(page, state.conversations ?? [], sessionIdOf) });
    } else {
      olderShown = false;
      update({ listError: "", conversations: page, conversationsNext: outcome.body.next_cursor });
    }
    listedFor = owner;
  } finally {
    document.body.dataset.listReads = String(--listReadsPending);
  }
}

/**
 * A listed conversation, brought up to what this page saw of it: the server updates the list
 * with the write that copies an exchange to the history, after the reply is answered, so a list
 * read at once may not show the exchange yet. The session on view is then shown as the page
 * knows it (its count, and its first message as the title) until a later read catches up.
 * @param {ListedConversation} listed
 */
function withWhatThisPageKnows(listed) {
  const { session } = state;
  if (!session || listed.session_id !== session.id || listed.message_count >= session.messageCount) return listed;
  const title = listed.title ?? (session.firstMessage === undefined ? null : session.firstMessage.replace(/\s+/g, " ").trim());
  return { ...listed, message_count: session.messageCount, title };
}

/** A stored message shown in the log (at the end, or before `first`). */
function showStored(message, templateName, first) {
  const entry = addEntry(message.role, message.role === "user" ? "You" : templateName, message.content);
  if (message.truncated) addNote(entry.item, "(cut at the personality's length limit)");
  if (first) ui.log.insertBefore(entry.item, first);
  return entry;
}

/** Opens a conversation from the list: its newest messages, and a reply still being written, if any. */
async function openConversation(sessionId) {
  if (waiting()) return;
  const before = state.phase;
  const shown = state.session;
  // Whose it is, if the read succeeds: the user signed in as it is sent (one signed in anew meanwhile is refused it).
  const owner = signedInUid;
  update({ phase: "opening", error: "", listError: "", confirmingErase: false, status: "Opening the conversation ..." });
  const outcome = await getJson(apiUrls(state.base).read(sessionId));
  if (!stillHeld("opening", shown)) return;
  if ("failure" in outcome) {
    const { failure } = outcome;
    const over = SESSION_OVER.get(failure.code);
    // The session on view, found gone (or not the signed-in user's): closed, as after a message that meets the same code.
    if (over && before === "active" && shown?.id === sessionId) closeSession({ error: errorText(failure), status: over });
    else update({ phase: before, error: errorText(failure), status: "The conversation could not be opened." });
    // Its list button lost the focus when it was disabled while the conversation opened.
    if (focusLost()) focusInList(sessionId);
    // Gone (its user's data erased from another tab or device), or the previous user's: the list, read again, no longer offers it.
    if (over) void loadConversations();
    return;
  }
  showConversation(outcome.body, owner);
}

/**
 * Shows a conversation as read (`owner`: the uid it was read as, if signed in): its history, then,
 * while a reply is still being written, that reply as it grows.
 */
function showConversation({ session, messages, partials, next_before }, owner) {
  ui.log.replaceChildren();
  for (const message of messages) showStored(message, session.template_name);
  const view = {
    id: session.session_id,
    templateName: session.template_name,
    messageCount: session.message_count,
    tokens: session.usage?.total_tokens ?? 0,
    ...(owner === undefined ? {} : { owner }),
  };
  const count = session.message_count;
  if (session.status !== "active") {
    update({ phase: "ended", session: view, earlier: next_before, status: `This conversation has ${session.status}: ${count} message${count === 1 ? "" : "s"}. Start a new one to keep chatting.` });
    // Its list button lost the focus when it was disabled while the conversation opened: it takes it back.
    if (focusLost()) focusInList(view.id);
    return;
  }
  const writing = partials.at(-1);
  if (writing) {
    const reply = addEntry("assistant", session.template_name, writing.text);
    reply.item.classList.add("streaming");
    update({ phase: "watching", session: view, earlier: next_before, status: `${session.template_name} is still writing the reply you asked for before ...` });
    // The controls are disabled while the reply is followed: the focus goes to what is being written.
    if (focusLost()) ui.log.focus();
    void watchReply(view.id, count, reply, writing.key);
    return;
  }
  update({ phase: "active", session: view, earlier: next_before, status: `Conversation resumed: ${count} message${count === 1 ? "" : "s"}.` });
  ui.message.focus();
}

/**
 * Follows a reply written by a request this page no longer holds (the page was reloaded mid-reply),
 * through its live partial (by its key: another message's reply may land first, or be written
 * beside it), until it is stored (or given up): then shows the conversation as stored, and
 * follows the next reply still being written, if any.
 */
async function watchReply(sessionId, count, reply, key) {
  const watched = () => state.phase === "watching" && state.session?.id === sessionId;
  /** The reads go as the session's owner: one signed in anew meanwhile is refused them, and one authorised before is left by update. */
  const owner = state.session?.owner;
  /**
   * The session read again (`extra`: its query), after `WATCH_MS`; a read that fails for a moment
   * is made again (after its Retry-After, when it gives one), up to WATCH_RETRIES times in a row.
   * Undefined once the page no longer follows this reply (another conversation opened meanwhile).
   */
  const read = async (extra) => {
    let wait = WATCH_MS;
    for (let failed = 0; ; failed++) {
      await new Promise((wake) => setTimeout(wake, wait));
      if (!watched()) return undefined;
      const outcome = await getJson(apiUrls(state.base).read(sessionId), extra);
      if (!watched()) return undefined;
      if (!("failure" in outcome) || !isTransient(outcome.failure) || failed >= WATCH_RETRIES) return outcome;
      wait = Math.max(WATCH_MS * 2 ** failed, 1000 * (retryAfterSeconds(outcome.failure.retryAfter) ?? 0));
      if (wait > WATCH_LONGEST_WAIT_MS) return outcome;
    }
  };
  /**
   * Given up: what is shown is the reply as far as it was read, not the reply; said so on it. A
   * session over meanwhile (gone: its user's data erased from another tab or device) is closed,
   * the start form back, as after a message or an end that meets the same code.
   */
  const giveUp = (failure) => {
    reply.item.classList.remove("streaming");
    reply.item.classList.add("failed");
    const over = SESSION_OVER.get(failure.code);
    if (over) {
      addNote(reply.item, "(incomplete: the session is over)");
      closeSession({ error: errorText(failure), status: over });
      return;
    }
    addNote(reply.item, "(incomplete: the rest could not be read; open the conversation again to see the reply as stored)");
    update({ phase: "active", error: errorText(failure), status: "The reply could not be followed to its end." });
  };
  for (;;) {
    const outcome = await read({ limit: "2" });
    if (outcome === undefined) return;
    if ("failure" in outcome) {
      giveUp(outcome.failure);
      // The list says it too (ended, expired, or no longer there).
      if (SESSION_OVER.has(outcome.failure.code)) void loadConversations();
      return;
    }
    const writing = outcome.body.partials.find((partial) => partial.key === key);
    if (writing) {
      reply.body.textContent = writing.text;
      continue;
    }
    // Stored, or its request failed: the history says which.
    const full = await read({});
    if (full === undefined) return;
    if ("failure" in full) giveUp(full.failure);
    else showConversation(full.body, owner);
    // Only where the message can be sent again: not in a conversation over meanwhile, nor while the next reply is followed.
    if (!("failure" in full) && full.body.session.message_count === count && state.phase === "active") {
      update({ status: "The reply was not completed, and nothing of it was stored: send your message again." });
    }
    void loadConversations();
    return;
  }
}

/** Shows the messages before those on view. */
async function loadEarlier() {
  const { session, earlier } = state;
  if (!session || earlier === null || waiting()) return;
  const outcome = await getJson(apiUrls(state.base).read(session.id), { before: earlier });
  // Answered late: another conversation opened (or a session started) meanwhile, or these
  // messages already shown by an earlier click; they are not the ones before those on view.
  if (state.session?.id !== session.id || state.earlier !== earlier) return;
  if ("failure" in outcome) {
    update({ error: errorText(outcome.failure) });
    return;
  }
  const first = ui.log.firstElementChild ?? undefined;
  for (const message of outcome.body.messages) showStored(message, session.templateName, first);
  update({ earlier: outcome.body.next_before });
  // The first message shown, the button went with the focus: the log, which holds what it showed, takes it.
  if (focusLost()) ui.log.focus();
}

/** Gathers every part of the user's export (following its cursors) into one JSON file, and downloads it. */
async function downloadData() {
  if (state.busy || WAITING.has(state.phase)) return;
  update({ busy: "download", error: "", listError: "", status: "Gathering your data ..." });
  const parts = [];
  let cursor = null;
  do {
    const outcome = await getJson(apiUrls(state.base).export, cursor ? { cursor } : {});
    const failure = "failure" in outcome ? outcome.failure : outcome.body.error ? { code: outcome.body.error.code, message: outcome.body.error.message } : undefined;
    if (failure) {
      update({ busy: "", error: errorText(failure), status: "Your data could not be downloaded." });
      if (focusLost()) ui.downloadData.focus();
      return;
    }
    parts.push(outcome.body);
    cursor = outcome.body.next_cursor;
  } while (cursor);
  const [first] = parts;
  const sessions = parts.flatMap((part) => part.sessions);
  // A connection split between two parts comes again in the next, `continued`: its messages join the entry before.
  const connections = [];
  for (const entry of parts.flatMap((part) => part.connections ?? [])) {
    const previous = connections.at(-1);
    const { continued, ...whole } = entry;
    if (continued && previous?.connection_id === entry.connection_id) previous.messages.push(...entry.messages);
    else connections.push(whole);
  }
  const file = { format: first.format, version: first.version, user_id: first.user_id, exported_at: first.exported_at, usage: first.usage, devices: first.devices, sessions, connections };
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([JSON.stringify(file, null, 2)], { type: "application/json" }));
  link.download = `chatify-export-${first.user_id.replace(/[^A-Za-z0-9_-]/g, "_")}.json`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  const counted = (count, noun) => `${count} ${noun}${count === 1 ? "" : "s"}`;
  update({ busy: "", status: `Downloaded your data: ${counted(sessions.length, "conversation")}, ${counted(connections.length, "connection")}.` });
  // Download my data, disabled while the parts were gathered, lost the focus: it takes it back.
  if (focusLost()) ui.downloadData.focus();
}

/** Erases everything stored under the user's id, once confirmed. */
async function eraseData() {
  if (state.busy || WAITING.has(state.phase)) return;
  update({ busy: "erase", confirmingErase: false, error: "", listError: "", status: "Erasing your data ..." });
  let failure;
  let unsure;
  try {
    const response = await apiFetch(() => asOwner(apiUrls(state.base).erase), { method: "DELETE" });
    const body = await readJson(response);
    if (response.ok && body?.success) {
      ui.log.replaceChildren();
      // A message given back after a failure is the erased conversation's too: neither it nor its key stays.
      ui.message.value = "";
      // A read of the list sent before the erasure and answered after it would list the erased conversations again.
      dropListReads();
      // The erasure took every connection of the user's, with their messages: the People panel lets go of them.
      people?.erased();
      update({
        busy: "",
        phase: "idle",
        session: undefined,
        earlier: null,
        conversations: [],
        conversationsNext: null,
        unsent: undefined,
        startKey: undefined,
        status: body.status === "erased" ? "Your data was erased. Your usage limits stay as they were." : "Erasing your data: it finishes within minutes.",
      });
      ui.startButton.focus();
      return;
    }
    failure = answerFailure(body, response);
    // A 5xx may come after some of the erasure ran (it deletes page by page).
    unsure = mayBeStored(failure) || (failure.status ?? 0) >= 500;
  } catch (error) {
    failure = pageFailure(error, "Could not reach the API");
    // Refused by the page before anything was sent (App Check, signing in), or lost on the way: sent, maybe done.
    unsure = !(error instanceof PageError);
  }
  // The confirmation, hidden when the erasure began, took the focus with it: Erase my data takes it back.
  if (!unsure) {
    update({ busy: "", error: errorText(failure), status: "Your data was not erased." });
    if (focusLost()) ui.eraseData.focus();
    return;
  }
  // The request may have reached the server and erased the data, its answer lost on the way back:
  // the list, read again, shows what is left.
  update({
    busy: "",
    error: `${errorText(failure)} Your data may have been erased all the same: erasing again is safe, it erases whatever is left.`,
    status: "The erasure's outcome is unknown: the list shows what is left.",
  });
  if (focusLost()) ui.eraseData.focus();
  // Read from its first page, as after a change of user: the older pages shown may list erased conversations.
  readListAnew();
}

// ---------------------------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------------------------

ui.user.value = rememberedUserId();
ui.apiBase.value = state.base;
const wanted = params.get("template");
if (wanted && [...ui.template.options].some((option) => option.value === wanted)) ui.template.value = wanted;
render();

ui.startForm.addEventListener("submit", startSession);
ui.conversationList.addEventListener("click", (event) => {
  const button = /** @type {HTMLElement} */ (event.target).closest("button");
  if (button?.dataset.sessionId) void openConversation(button.dataset.sessionId);
});
ui.moreConversations.addEventListener("click", () => void loadConversations(true));
ui.earlier.addEventListener("click", () => void loadEarlier());
ui.user.addEventListener("change", () => {
  // Any read of the list under way is the previous id's. The list on view stays until the new one
  // comes: emptied at once, the panels below would move under a pointer leaving the field for them.
  readListAnew();
});
ui.downloadData.addEventListener("click", () => void downloadData());
ui.eraseData.addEventListener("click", () => {
  update({ confirmingErase: true });
  ui.eraseNo.focus();
});
ui.eraseNo.addEventListener("click", () => {
  update({ confirmingErase: false, status: "Nothing was erased." });
  ui.eraseData.focus();
});
ui.eraseYes.addEventListener("click", () => void eraseData());
void deploymentRead.then(() => loadConversations());
ui.composer.addEventListener("submit", sendMessage);
ui.endButton.addEventListener("click", endSession);
ui.message.addEventListener("keydown", (event) => {
  // Enter sends, Shift+Enter is a new line; not while an input method is composing text.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});
// The People panel (people.js): connections with other users, through the same API base and identity.
people = startPeople({
  apiFetch,
  base: () => state.base,
  userId: () => (state.signedIn ? state.signedIn.account.uid : ui.user.value.trim()),
  signedIn: () => state.signedIn !== undefined,
  errorText,
  answerFailure,
  pageFailure,
  mayBeStored,
  isPageError: (error) => error instanceof PageError,
  readJson,
  loadOnce,
  sdkVersion: FIREBASE_SDK_VERSION,
  newIdempotencyKey,
  mergedById,
  focusLost,
});

ui.settings.addEventListener("submit", async (event) => {
  event.preventDefault();
  await deploymentRead;
  let base;
  try {
    base = useBase(ui.apiBase.value.trim());
  } catch (error) {
    update({ error: error instanceof Error ? error.message : String(error) });
    ui.apiBase.focus();
    return;
  }
  update({ error: "", listError: "", status: `API base: ${base} (${/\/api\/v1$/.test(base) ? "Hosting routes" : "function URLs"}).` });
});
