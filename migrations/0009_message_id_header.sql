ALTER TABLE `messages` ADD `message_id_header` text;--> statement-breakpoint
CREATE INDEX `messages_message_id_header` ON `messages` (`message_id_header`) WHERE message_id_header IS NOT NULL;