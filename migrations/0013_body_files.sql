CREATE TABLE `body_files` (
	`id` integer PRIMARY KEY NOT NULL,
	`created_at` integer NOT NULL,
	`sealed` integer DEFAULT false NOT NULL
);
--> statement-breakpoint
ALTER TABLE `messages` ADD `body_file` integer;--> statement-breakpoint
ALTER TABLE `messages` ADD `body_offset` integer;--> statement-breakpoint
CREATE INDEX `messages_body_file` ON `messages` (`body_file`) WHERE body_file IS NOT NULL;