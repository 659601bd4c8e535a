// SQL migrations are imported as text so the compiled binary carries them (see db/migrations.ts).
declare module "*.sql" {
  const text: string;
  export default text;
}
