CREATE TABLE `domain_verdicts` (
	`domain` text PRIMARY KEY NOT NULL,
	`last_result` text NOT NULL,
	`checked_at` integer NOT NULL,
	`passed_at` integer,
	`verified` integer NOT NULL,
	`summary` text DEFAULT '' NOT NULL
);
