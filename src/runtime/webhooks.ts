/** @module runtime/webhooks — the `[[webhook]]` tables as `serve` runs them: each `user` name resolved to its id. */
import { findUser } from "../auth/users.ts";
import { ConfigError } from "../config/errors.ts";
import type { WebhookConfig } from "../config/schema.ts";
import type { Db } from "../db/client.ts";
import type { Webhook } from "../events/record.ts";

/**
 * Throws a ConfigError naming `webhook[i].user` for a user that does not exist: the hook would otherwise get no
 * events at all, silently. `file` labels the error as config loading does.
 */
export function resolveWebhooks(webhooks: readonly WebhookConfig[], file: string | null, db: Db): Webhook[] {
  return webhooks.map((w, i) => {
    let userId = null;
    if (w.user !== "") {
      const user = findUser(db, w.user);
      if (!user) throw new ConfigError(file ?? "<defaults>", `webhook[${i}].user`, `no user ${JSON.stringify(w.user)} (see outpost user list)`);
      userId = user.id;
    }
    return { name: w.name, url: w.url, events: w.events, userId, secret: w.secret };
  });
}
