// The Chatify chat page: a plain ES module, served as it is (no build step, no framework).
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
};

/** @type {{ id: string, templateName: string } | undefined} */
let session;
/** @type {{ getIdToken(): Promise<string>, uid: string } | undefined} the signed-in Firebase user, once the server asked for one */
let firebaseUser;

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
    };
  }
  return {
    create: `${root}/createSession`,
    message: (sessionId) => `${root}/sendMessage/${id(sessionId)}`,
    end: (sessionId) => `${root}/endSession/${id(sessionId)}`,
  };
}

/** A failure said to the visitor as it is (its message is the sentence to show). */
class PageError extends Error {}

/** This site's own API: the Hosting routes on the page's origin. */
const OWN_BASE = `${location.origin}/api/v1`;

/**
 * The API bases the deployment allows besides the page's own origin, as it serves them: Hosting
 * a file written for the deployed project (`npm run deploy`), `npm start` its own. Unreadable,
 * none: the page then talks to its own origin only.
 */
async function deploymentBases() {
  try {
    const response = await fetch("/api-bases.json", { cache: "no-cache" });
    const body = response.ok ? await response.json() : undefined;
    return Array.isArray(body?.apiBases) ? body.apiBases.filter((base) => typeof base === "string").map((base) => baseKey(new URL(base))) : [];
  } catch {
    return [];
  }
}

/** A base as compared: origin and path, without a trailing slash. */
function baseKey(url) {
  return `${url.origin}${url.pathname.replace(/\/+$/, "")}`;
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
    `Refused the API base ${raw}: this page sends your messages and sign-in token only to this site (${location.origin}) ` +
      `and to the API bases its deployment lists (${allowed.length > 0 ? allowed.join(", ") : "none"}). Nothing was sent there.`,
  );
}

let urls = apiUrls(OWN_BASE);
ui.apiBase.value = OWN_BASE;
/** The deployment's list, once read; until then only the page's own origin is allowed. */
let allowedBases = [];

/** Reads the deployment's list, then takes the base of the page's address (`?api=`) if it is allowed. */
const basesRead = deploymentBases().then((bases) => {
  allowedBases = bases;
  const asked = params.get("api");
  if (!asked) return;
  try {
    useBase(asked);
  } catch (error) {
    showError(`${error instanceof Error ? error.message : String(error)} This site's own API is used instead.`);
  }
});

/** Sends every later call to `raw`, if allowed; throws the PageError of allowedBase otherwise. */
function useBase(raw) {
  const base = allowedBase(raw, allowedBases);
  urls = apiUrls(base);
  ui.apiBase.value = base;
  return base;
}

// ---------------------------------------------------------------------------------------------
// Identity: none until the server answers 401, then Firebase Auth, anonymous sign-in
// ---------------------------------------------------------------------------------------------

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = () => resolve(undefined);
    script.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.append(script);
  });
}

/**
 * Signs the visitor in anonymously with the Firebase Auth web SDK, loaded from Hosting's reserved
 * URLs (deployed, Hosting serves the SDK and the project's config there; `npm start` serves the
 * installed SDK and a config for the Auth emulator). The emulator, locally, is the one the server
 * itself checks tokens on, as its init.js says; never one the page's address names, since the
 * stored user's ID token goes to it.
 */
async function signIn() {
  const base = `/__/firebase/${FIREBASE_SDK_VERSION}`;
  if (!("firebase" in window)) {
    await loadScript(`${base}/firebase-app-compat.js`);
    await loadScript(`${base}/firebase-auth-compat.js`);
    await loadScript("/__/firebase/init.js");
  }
  // @ts-ignore: the compat SDK is a global
  const auth = window.firebase.auth();
  // @ts-ignore: set by the local server's init.js only
  const emulator = typeof window.CHATIFY_AUTH_EMULATOR === "string" ? window.CHATIFY_AUTH_EMULATOR : undefined;
  if (emulator && !auth.emulatorConfig) auth.useEmulator(`http://${emulator}`, { disableWarnings: true });
  const credential = await auth.signInAnonymously();
  firebaseUser = credential.user;
  // The server takes the token's user as the session's owner: a different body user_id is refused.
  ui.user.value = firebaseUser.uid;
  ui.user.readOnly = true;
  ui.identity.textContent = `Identity: signed in anonymously with Firebase Auth as ${firebaseUser.uid}${emulator ? ` (Auth emulator at ${emulator})` : ""}.`;
}

/**
 * fetch with the visitor's ID token when signed in. A 401 UNAUTHENTICATED before any sign-in
 * signs in, then sends the request once more (nothing was done: the server refused it first).
 * `json`, a function, makes the body at each send: signing in may change what it must say.
 */
async function apiFetch(url, { method, headers = {}, json }) {
  const send = async () => {
    const all = new Headers(headers);
    if (firebaseUser) all.set("Authorization", `Bearer ${await firebaseUser.getIdToken()}`);
    if (!json) return fetch(url, { method, headers: all });
    all.set("Content-Type", "application/json");
    return fetch(url, { method, headers: all, body: JSON.stringify(json()) });
  };
  const response = await send();
  if (response.status !== 401 || firebaseUser) return response;
  try {
    showStatus("The server asks who you are: signing in with Firebase Auth ...");
    await signIn();
  } catch (error) {
    throw new PageError(
      `This server requires a Firebase ID token, and signing in failed: ${error instanceof Error ? error.message : String(error)}. ` +
        "Locally, run the Auth emulator and start the server with FIREBASE_AUTH_EMULATOR_HOST set to it (see the README).",
    );
  }
  return send();
}

// ---------------------------------------------------------------------------------------------
// Errors, shown as a person would want to read them
// ---------------------------------------------------------------------------------------------

/** Seconds of a Retry-After header (seconds or an HTTP date), as words. */
function waitText(retryAfter) {
  if (!retryAfter) return "";
  let seconds = Number(retryAfter);
  if (!Number.isFinite(seconds)) seconds = Math.max(0, Math.round((Date.parse(retryAfter) - Date.now()) / 1000));
  if (!Number.isFinite(seconds)) return "";
  return seconds < 90 ? ` Try again in ${seconds} s.` : ` Try again in ${Math.ceil(seconds / 60)} min.`;
}

/** A sentence for an API error body (`{success: false, error: {code, message}}`), with the answer's status and Retry-After when known. */
function errorText(body, status, retryAfter) {
  const code = body?.error?.code ?? "";
  const message = body?.error?.message ?? (status ? `HTTP ${status}` : "unknown error");
  switch (code) {
    case "RATE_LIMITED":
    case "TOO_MANY_ACTIVE_SESSIONS":
    case "SESSION_EXCHANGE_LIMIT":
      return `Slow down: ${message}.${waitText(retryAfter) || " Try again later."}`;
    case "SESSION_ENDED":
      return "This session has ended. Start a new one to keep chatting.";
    case "SESSION_EXPIRED":
      return "This session expired after being idle. Start a new one to keep chatting.";
    case "MODEL_UNAVAILABLE":
      return `The model is unavailable right now.${waitText(retryAfter) || " Try again in a moment."}`;
    case "MODEL_TIMEOUT":
      return "The model took too long to answer. Try again.";
    case "DATABASE_UNAVAILABLE":
      return `The database did not answer.${waitText(retryAfter) || " Try again."}`;
    case "UNAUTHENTICATED":
      return `Sign-in needed: ${message}.`;
    default:
      return `${message}${code ? ` (${code}${status ? `, HTTP ${status}` : ""})` : ""}.`;
  }
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return undefined;
  }
}

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.hidden = true;
  ui.error.textContent = "";
}

function showStatus(text) {
  ui.status.textContent = text;
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events over fetch
// ---------------------------------------------------------------------------------------------

/**
 * Reads a `text/event-stream` body, calling `onEvent(name, data)` per event with its `data:`
 * parsed as JSON. Comment lines (`: keep-alive` heartbeats) and other fields are ignored, as the
 * SSE format says. Returns when the stream ends.
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
    if (data.length > 0) onEvent(name, JSON.parse(data.join("\n")));
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    // An event ends at a blank line.
    let match;
    while ((match = /\r\n\r\n|\n\n|\r\r/.exec(buffered))) {
      dispatch(buffered.slice(0, match.index));
      buffered = buffered.slice(match.index + match[0].length);
    }
  }
  buffered += decoder.decode();
  if (buffered.trim() !== "") dispatch(buffered);
}

// ---------------------------------------------------------------------------------------------
// The conversation
// ---------------------------------------------------------------------------------------------

function setState(state) {
  document.body.dataset.state = state;
  const streaming = state === "streaming";
  ui.message.disabled = streaming;
  ui.sendButton.disabled = streaming;
  ui.endButton.disabled = streaming;
  ui.log.setAttribute("aria-busy", String(streaming));
}

function addEntry(role, text) {
  const item = document.createElement("li");
  item.className = role;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : session?.templateName ?? "Assistant";
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  item.append(who, body);
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
  clearError();
  const userId = ui.user.value.trim();
  if (!userId && !firebaseUser) {
    showError("Enter a user id (any name of up to 128 characters).");
    ui.user.focus();
    return;
  }
  ui.startButton.disabled = true;
  showStatus("Starting a session ...");
  try {
    const templateId = ui.template.value;
    const response = await apiFetch(urls.create, {
      method: "POST",
      // Signed in, the token names the user: the body's user_id must be the same (or absent).
      json: () => ({ user_id: firebaseUser ? firebaseUser.uid : userId, template_id: templateId }),
    });
    const body = await readJson(response);
    if (!response.ok || !body?.success) {
      showError(errorText(body, response.status, response.headers.get("Retry-After")));
      showStatus("No session.");
      return;
    }
    try {
      localStorage.setItem("chatify.user_id", body.user_id);
    } catch {
      // Not remembered: fine.
    }
    session = { id: body.session_id, templateName: body.template_name };
    ui.session.dataset.sessionId = body.session_id;
    ui.templateName.textContent = body.template_name;
    ui.count.textContent = "0";
    ui.tokens.textContent = "0";
    ui.log.replaceChildren();
    ui.startForm.hidden = true;
    ui.session.hidden = false;
    setState("active");
    showStatus(`Session ${body.session_id} started.`);
    ui.message.focus();
  } catch (error) {
    showError(error instanceof PageError ? error.message : `Could not reach the API at ${urls.create}: ${error instanceof Error ? error.message : String(error)}.`);
    showStatus("No session.");
  } finally {
    ui.startButton.disabled = false;
  }
}

/** The session is over (ended here, or found ended or expired): back to the start form. */
function closeSession(statusText) {
  session = undefined;
  setState("ended");
  ui.message.disabled = true;
  ui.sendButton.disabled = true;
  ui.endButton.disabled = true;
  ui.startForm.hidden = false;
  showStatus(statusText);
  ui.startButton.focus();
}

async function sendMessage(event) {
  event.preventDefault();
  if (!session || document.body.dataset.state === "streaming") return;
  const text = ui.message.value;
  if (text.trim() === "") {
    ui.message.focus();
    return;
  }
  clearError();
  const current = session;
  addEntry("user", text);
  ui.message.value = "";
  const reply = addEntry("assistant", "");
  reply.item.classList.add("streaming");
  setState("streaming");
  showStatus(`${current.templateName} is writing ...`);

  let received = "";
  /** @type {{ body: any, status?: number, retryAfter?: string | null } | undefined} */
  let failure;
  let finished;
  try {
    const response = await apiFetch(urls.message(current.id), {
      method: "POST",
      headers: { Accept: "text/event-stream" },
      json: () => ({ message: text }),
    });
    if ((response.headers.get("Content-Type") ?? "").startsWith("text/event-stream")) {
      await readEvents(response, (name, data) => {
        if (name === "delta" && typeof data.text === "string") {
          received += data.text;
          reply.body.textContent = received;
          reply.item.scrollIntoView({ block: "end" });
        } else if (name === "done") {
          finished = data;
        } else if (name === "error") {
          failure = { body: data };
        }
      });
      if (!finished && !failure) failure = { body: { error: { code: "STREAM_CUT", message: "The connection closed before the reply was complete; nothing was stored, send it again" } } };
    } else {
      // A JSON answer: an error decided before the reply began, a replay, or a server (or a
      // Hosting route) that answered without a stream.
      const body = await readJson(response);
      if (response.ok && body?.success) finished = body;
      else failure = { body, status: response.status, retryAfter: response.headers.get("Retry-After") };
    }
  } catch (error) {
    failure = {
      body: { error: { code: "", message: error instanceof PageError ? error.message : `Could not reach the API: ${error instanceof Error ? error.message : String(error)}` } },
    };
  }

  reply.item.classList.remove("streaming");
  if (finished) {
    reply.body.textContent = finished.response;
    if (finished.truncated) addNote(reply.item, "(cut at the personality's length limit)");
    ui.count.textContent = String(finished.message_count);
    // The session's tokens so far, as the replies report them (the end's answer gives the full total, summaries included).
    if (finished.usage) ui.tokens.textContent = String(Number(ui.tokens.textContent) + finished.usage.total_tokens);
    setState("active");
    showStatus(`Reply complete. Messages: ${finished.message_count}.`);
    ui.message.focus();
    return;
  }
  reply.item.classList.add("failed");
  if (received === "") reply.body.textContent = "(no reply)";
  addNote(reply.item, "(not stored)");
  const code = failure?.body?.error?.code;
  showError(errorText(failure?.body, failure?.status, failure?.retryAfter));
  if (code === "SESSION_ENDED" || code === "SESSION_EXPIRED") {
    closeSession(code === "SESSION_EXPIRED" ? "The session expired." : "The session has ended.");
    return;
  }
  // The message was not stored: give its text back so it can be sent again.
  ui.message.value = text;
  setState("active");
  showStatus("The reply failed.");
  ui.message.focus();
}

async function endSession() {
  if (!session) return;
  clearError();
  ui.endButton.disabled = true;
  try {
    const response = await apiFetch(urls.end(session.id), { method: "DELETE" });
    const body = await readJson(response);
    if (response.ok && body?.success) {
      ui.count.textContent = String(body.message_count);
      if (body.usage) ui.tokens.textContent = String(body.usage.total_tokens);
      closeSession(`Session ended: ${body.message_count} message${body.message_count === 1 ? "" : "s"} in ${Math.round(body.duration_seconds)} s.`);
      return;
    }
    showError(errorText(body, response.status, response.headers.get("Retry-After")));
    const code = body?.error?.code;
    if (code === "SESSION_ENDED" || code === "SESSION_EXPIRED") closeSession("The session was already over.");
    else ui.endButton.disabled = false;
  } catch (error) {
    showError(error instanceof PageError ? error.message : `Could not reach the API: ${error instanceof Error ? error.message : String(error)}.`);
    ui.endButton.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------------------------

ui.user.value = rememberedUserId();
const wanted = params.get("template");
if (wanted && [...ui.template.options].some((option) => option.value === wanted)) ui.template.value = wanted;

ui.startForm.addEventListener("submit", startSession);
ui.composer.addEventListener("submit", sendMessage);
ui.endButton.addEventListener("click", endSession);
ui.message.addEventListener("keydown", (event) => {
  // Enter sends, Shift+Enter is a new line; not while an input method is composing text.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});
ui.settings.addEventListener("submit", async (event) => {
  event.preventDefault();
  await basesRead;
  let base;
  try {
    base = useBase(ui.apiBase.value.trim());
  } catch (error) {
    showError(error instanceof Error ? error.message : String(error));
    ui.apiBase.focus();
    return;
  }
  clearError();
  showStatus(`API base: ${base} (${/\/api\/v1$/.test(base) ? "Hosting routes" : "function URLs"}).`);
});

void basesRead.then(() => {
  document.body.dataset.ready = "true";
});
