ALTER TABLE `messages` ADD `idempotency_hash` text;--> statement-breakpoint
ALTER TABLE `messages` ADD `tag` text;--> statement-breakpoint
ALTER TABLE `messages` ADD `metadata` text;--> statement-breakpoint
CREATE INDEX `messages_user_created` ON `messages` (`user_id`,`created_at`,`id`);--> statement-breakpoint
CREATE INDEX `messages_user_tag` ON `messages` (`user_id`,`tag`,`created_at`,`id`) WHERE tag IS NOT NULL;--> statement-breakpoint
ALTER TABLE `recipients` ADD `address_key` text DEFAULT '' NOT NULL;--> statement-breakpoint
-- rows stored before the key was kept: lower-casing is the key of an ASCII canonical address (mail/address.ts)
UPDATE `recipients` SET `address_key` = lower(`address`);--> statement-breakpoint
CREATE INDEX `recipients_address` ON `recipients` (`address_key`,`message_id`);--> statement-breakpoint
ALTER TABLE `events` ADD `tag` text;--> statement-breakpoint
ALTER TABLE `events` ADD `metadata` text;