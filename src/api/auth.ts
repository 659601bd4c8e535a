/**
 * @module api/auth — who is calling: `Authorization: Bearer KEY` or `?access_token=KEY` → the key's user and
 * allowed sender domains. Checked before the body is read; the result is kept per request for the routes.
 */
import { hashKey, userForKey } from "../auth/keys.ts";
import { getUser } from "../auth/users.ts";
import type { Db } from "../db/client.ts";
import { ApiError } from "../mail/errors.ts";
import type { UserId } from "../mail/ids.ts";

export interface Principal {
  userId: UserId;
  /** the user's name, for log lines */
  userName: string;
  /** the user's sender domains (envelope sender, From, Sender; "*.d" for subdomains); empty = any */
  allowedDomains: string[];
  /** SHA-256 of the key: what rate limits are counted by */
  keyId: string;
}

/** The key a request presents, or null. */
export function presentedKey(request: Request): string | null {
  const header = request.headers.get("authorization");
  if (header) {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    return m ? m[1]! : null;
  }
  const q = request.url.indexOf("?");
  if (q < 0 || !request.url.includes("access_token=", q)) return null;
  return new URLSearchParams(request.url.slice(q + 1)).get("access_token");
}

/**
 * Finds the principal for a key. Found keys are remembered for `cacheMs` (default 2 s) so a busy client
 * costs one look-up per interval rather than two queries per request; a revoked key stops working
 * within that time.
 */
export class ApiAuth {
  private cache = new Map<string, { principal: Principal; until: number }>();
  private byRequest = new WeakMap<Request, Principal>();

  constructor(
    private db: Db,
    private cacheMs = 2000,
    private now: () => number = Date.now,
  ) {}

  /**
   * Authenticates the request (401 otherwise) and remembers the answer for `principalOf`. A drop-in API
   * (api/compat) passes the key where its clients send it, and what to tell a request without one.
   */
  authenticate(
    request: Request,
    key: string | null = presentedKey(request),
    missing = "an API key is required: Authorization: Bearer KEY, or ?access_token=KEY",
  ): Principal {
    if (!key) throw new ApiError(401, "unauthorized", missing);
    const principal = this.lookup(key);
    if (!principal) throw new ApiError(401, "unauthorized", "invalid or revoked API key");
    this.byRequest.set(request, principal);
    return principal;
  }

  /** The principal `authenticate` found for this request. */
  principalOf(request: Request): Principal {
    const p = this.byRequest.get(request);
    if (!p) throw new ApiError(401, "unauthorized", "an API key is required");
    return p;
  }

  private lookup(key: string): Principal | null {
    const keyId = hashKey(key);
    const now = this.now();
    const hit = this.cache.get(keyId);
    if (hit && hit.until > now) return hit.principal;
    const userId = userForKey(this.db, key);
    const user = userId === null ? null : getUser(this.db, userId);
    if (!user) {
      this.cache.delete(keyId);
      return null;
    }
    const principal: Principal = { userId: user.id, userName: user.name, allowedDomains: user.domains, keyId };
    if (this.cache.size > 10_000) this.cache.clear(); // bounded: only many distinct keys in 2 s get here
    this.cache.set(keyId, { principal, until: now + this.cacheMs });
    return principal;
  }
}
