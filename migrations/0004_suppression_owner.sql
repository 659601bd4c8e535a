PRAGMA foreign_keys=OFF;--> statement-breakpoint
CREATE TABLE `__new_suppressions` (
	`user_id` integer DEFAULT 0 NOT NULL,
	`address` text NOT NULL,
	`reason` text NOT NULL,
	`created_at` integer NOT NULL,
	PRIMARY KEY(`user_id`, `address`)
);
--> statement-breakpoint
-- Until now one list served the whole instance: each entry stays in force for every sender, so it is copied to
-- the ownerless list (user 0) and to every user's list, keeping its reason and time.
INSERT INTO `__new_suppressions`("user_id", "address", "reason", "created_at")
  SELECT 0, "address", "reason", "created_at" FROM `suppressions`
  UNION ALL
  SELECT `users`.`id`, s."address", s."reason", s."created_at" FROM `suppressions` s CROSS JOIN `users`;--> statement-breakpoint
DROP TABLE `suppressions`;--> statement-breakpoint
ALTER TABLE `__new_suppressions` RENAME TO `suppressions`;--> statement-breakpoint
PRAGMA foreign_keys=ON;