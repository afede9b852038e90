/** The framework-free request and response the HTTP boundary works with. */

export interface HttpRequest {
  readonly method: string;
  /** The path as the function sees it: `/{id}` on a direct call, the full route through Hosting. */
  readonly path: string;
  /** Lower-case header names. */
  readonly headers: Readonly<Record<string, string | undefined>>;
  readonly body: Buffer;
  /** The query string, without its `?` (absent or empty when there is none). */
  readonly query?: string;
  /** The caller's network address, as the adapter knows it (see cloud-adapter.ts); absent when unknown. */
  readonly clientAddress?: string;
}

export interface HttpResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  /** Serialised as JSON; absent for 204. */
  readonly body?: unknown;
}
