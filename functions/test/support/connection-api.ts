import type { Answer, Instance } from "./http-harness";

/** What a user of the API needs of an instance: its calls (an in-process instance, or a process of `npm start`'s by its URL). */
export type ApiCaller = Pick<Instance, "call">;

/** The connection and device routes in one URL form. */
export interface ConnectionRoutes {
  readonly form: string;
  readonly connections: string;
  readonly connection: (id: string) => string;
  readonly accept: (id: string) => string;
  readonly decline: (id: string) => string;
  readonly block: (id: string) => string;
  readonly messages: (id: string) => string;
  readonly devices: string;
}

/** The Hosting routes (as deployed behind Hosting, and as the local server serves firebase.json's rewrites). */
export const HOSTING_ROUTES: ConnectionRoutes = {
  form: "Hosting routes",
  connections: "/api/v1/connections",
  connection: (id) => `/api/v1/connections/${id}`,
  accept: (id) => `/api/v1/connections/${id}/accept`,
  decline: (id) => `/api/v1/connections/${id}/decline`,
  block: (id) => `/api/v1/connections/${id}/block`,
  messages: (id) => `/api/v1/connections/${id}/messages`,
  devices: "/api/v1/devices",
};

/** The function URLs, as the local server serves them (`/{project}/{region}/{function}/...`). */
export const FUNCTION_ROUTES: ConnectionRoutes = {
  form: "function URLs",
  connections: "/demo-chatify/us-central1/connections",
  connection: (id) => `/demo-chatify/us-central1/connection/${id}`,
  accept: (id) => `/demo-chatify/us-central1/acceptConnection/${id}`,
  decline: (id) => `/demo-chatify/us-central1/declineConnection/${id}`,
  block: (id) => `/demo-chatify/us-central1/blockConnection/${id}`,
  messages: (id) => `/demo-chatify/us-central1/connectionMessages/${id}`,
  devices: "/demo-chatify/us-central1/devices",
};

export const ROUTE_FORMS = [HOSTING_ROUTES, FUNCTION_ROUTES] as const;

/** One user of the API without an ID token (REQUIRE_AUTH off): every call names them with `user_id`. */
export class ApiUser {
  constructor(
    readonly id: string,
    private readonly api: ApiCaller,
    private readonly routes: ConnectionRoutes,
  ) {}

  on(api: ApiCaller): ApiUser {
    return new ApiUser(this.id, api, this.routes);
  }

  ask(otherUserId: string): Promise<Answer> {
    return this.api.call("POST", this.routes.connections, { user_id: this.id, other_user_id: otherUserId });
  }

  list(query = ""): Promise<Answer> {
    return this.api.call("GET", `${this.routes.connections}?user_id=${encodeURIComponent(this.id)}${query}`);
  }

  get(id: string): Promise<Answer> {
    return this.api.call("GET", `${this.routes.connection(id)}?user_id=${encodeURIComponent(this.id)}`);
  }

  accept(id: string): Promise<Answer> {
    return this.api.call("POST", this.routes.accept(id), { user_id: this.id });
  }

  decline(id: string): Promise<Answer> {
    return this.api.call("POST", this.routes.decline(id), { user_id: this.id });
  }

  end(id: string): Promise<Answer> {
    return this.api.call("DELETE", `${this.routes.connection(id)}?user_id=${encodeURIComponent(this.id)}`);
  }

  block(id: string): Promise<Answer> {
    return this.api.call("POST", this.routes.block(id), { user_id: this.id });
  }

  unblock(id: string): Promise<Answer> {
    return this.api.call("DELETE", `${this.routes.block(id)}?user_id=${encodeURIComponent(this.id)}`);
  }

  send(id: string, message: string, headers: Record<string, string> = {}): Promise<Answer> {
    return this.api.call("POST", this.routes.messages(id), { user_id: this.id, message }, headers);
  }

  read(id: string, query = ""): Promise<Answer> {
    return this.api.call("GET", `${this.routes.messages(id)}?user_id=${encodeURIComponent(this.id)}${query}`);
  }

  register(token: string, previews?: boolean): Promise<Answer> {
    return this.api.call("POST", this.routes.devices, { user_id: this.id, token, ...(previews === undefined ? {} : { previews }) });
  }

  unregister(token: string): Promise<Answer> {
    return this.api.call("DELETE", this.routes.devices, { user_id: this.id, token });
  }

  /** Asks `other` for a connection and has them accept it; returns its id. */
  async connectWith(other: ApiUser): Promise<string> {
    const asked = await this.ask(other.id);
    if (asked.status !== 201) throw new Error(`request failed: ${asked.status} ${asked.text}`);
    const id = (asked.body.connection as { connection_id: string }).connection_id;
    const accepted = await other.accept(id);
    if (accepted.status !== 200) throw new Error(`accept failed: ${accepted.status} ${accepted.text}`);
    return id;
  }
}

/** The `connection` object of an answer. */
export function connectionOf(answer: Answer): Record<string, unknown> {
  return answer.body.connection as Record<string, unknown>;
}
