/** The header a Firebase client SDK sends its App Check token in (`X-Firebase-AppCheck`), as Node names it. */
export const APP_CHECK_HEADER = "x-firebase-appcheck";

/** What a verified App Check token says: which app of the project made the request. */
export interface AppCheckClaims {
  readonly appId: string;
}

/** The port through which the HTTP boundary checks an App Check token. */
export interface AppCheckVerifier {
  /**
   * With `consume`, the token is also marked used at App Check (replay protection), and a token
   * used before is refused: a round trip to Google per call, and the client must attest again
   * for each request, so only for the calls that cost.
   */
  verify(token: string, options?: { readonly consume?: boolean }): Promise<AppCheckClaims>;
}

/** No App Check token where one is required (401 APP_CHECK_REQUIRED). */
export class AppCheckRequiredError extends Error {
  override readonly name = "AppCheckRequiredError";
}

/** The token is malformed, forged, expired, another project's or app's, or already used (401 APP_CHECK_INVALID). */
export class AppCheckInvalidError extends Error {
  override readonly name = "AppCheckInvalidError";
}

/** The token could not be checked at all: the keys or the replay check out of reach (503). */
export class AppCheckUnavailableError extends Error {
  override readonly name = "AppCheckUnavailableError";
}

/** The token a request carries in `X-Firebase-AppCheck`; absent or blank, an AppCheckRequiredError. */
export function appCheckTokenOf(header: string | undefined): string {
  const token = header?.trim() ?? "";
  if (token === "") throw new AppCheckRequiredError("an App Check token is required");
  return token;
}
