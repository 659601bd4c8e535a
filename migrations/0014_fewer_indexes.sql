DROP INDEX `messages_created`;--> statement-breakpoint
DROP INDEX `recipients_due`;