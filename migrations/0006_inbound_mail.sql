CREATE TABLE `inbound_mail` (
	`id` text PRIMARY KEY NOT NULL,
	`received_at` integer NOT NULL,
	`kind` text NOT NULL,
	`rcpt` text NOT NULL,
	`mail_from` text NOT NULL,
	`client_ip` text NOT NULL,
	`size` integer NOT NULL,
	`reason` text NOT NULL,
	`raw` blob NOT NULL
);
--> statement-breakpoint
CREATE INDEX `inbound_mail_received` ON `inbound_mail` (`received_at`);