import type { IdentityVerifier } from "../auth/identity";
import type { Config } from "../config";
import type { Log } from "../log/log";
import type { MaintenanceReport } from "../session/maintenance";
import type { SessionService } from "../session/session-service";

/** What a function instance holds between requests: built once, on the first request. */
export interface Runtime {
  readonly config: Config;
  readonly sessions: SessionService;
  /** Checks bearer tokens. */
  readonly identity: IdentityVerifier;
  readonly log: Log;
  /** The scheduled clean-up: expiry, retention, forgotten keys. */
  readonly maintain: (now?: number) => Promise<MaintenanceReport>;
}
