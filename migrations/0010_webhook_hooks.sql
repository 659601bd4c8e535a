DROP INDEX `webhook_outbox_due`;--> statement-breakpoint
ALTER TABLE `webhook_outbox` ADD `hook` text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE `webhook_outbox` ADD `message_id` text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE `webhook_outbox` ADD `lease_until` integer;--> statement-breakpoint
ALTER TABLE `webhook_outbox` ADD `last_attempt_at` integer;--> statement-breakpoint
ALTER TABLE `webhook_outbox` ADD `failed_at` integer;--> statement-breakpoint
ALTER TABLE `webhook_outbox` ADD `finished_at` integer;--> statement-breakpoint
CREATE INDEX `webhook_outbox_order` ON `webhook_outbox` (`hook`,`message_id`,`id`) WHERE state IS NULL;--> statement-breakpoint
CREATE INDEX `webhook_outbox_finished` ON `webhook_outbox` (`finished_at`) WHERE state IS NOT NULL;--> statement-breakpoint
CREATE INDEX `webhook_outbox_due` ON `webhook_outbox` (`hook`,`next_attempt_at`) WHERE state IS NULL;