// `npm start`: applies the D1 migrations to the local database, then serves the Worker on
// http://127.0.0.1:8080 (`npm start -- --port 8081` for another port) with local D1 and KV kept
// under .wrangler/. Tokens come from .dev.vars (or, without one, .env), as wrangler reads them; any
// of the three not set there gets a local-only value (never deployed: these are --var flags of
// `wrangler dev`, not vars of wrangler.toml).
import { existsSync, readFileSync } from "node:fs";
import { definedSecrets, parsePort } from "./start-options.mjs";
import { wrangler } from "./wrangler.mjs";

const LOCAL_TOKENS = {
	CALLBACK_TOKENS: "local-callback-token",
	LOOKUP_TOKENS: "local-lookup-token",
	ADMIN_TOKENS: "local-admin-token",
};

// npm passes a SIGTERM on to the shell that runs this script, and Debian's sh exits without
// passing it further: the server would outlive `npm start`. A script whose parent has gone stops
// as it does on SIGTERM (the handlers of wrangler() pass the signal on to wrangler).
const parent = process.ppid;
setInterval(() => {
	if (process.ppid !== parent) process.kill(process.pid, "SIGTERM");
}, 500).unref();

const { port, error } = parsePort(process.argv.slice(2), process.env);
if (error) {
	console.error(`npm start: ${error}`);
	process.exit(1);
}

const defined = definedSecrets(
	(file) => (existsSync(file) ? readFileSync(file, "utf8") : undefined),
	process.env,
);
const vars = Object.entries(LOCAL_TOKENS)
	.filter(([name]) => !defined.has(name))
	.flatMap(([name, value]) => ["--var", `${name}:${value}`]);

// Without a terminal on stdin wrangler applies local migrations without asking to confirm.
const migrated = await wrangler(["d1", "migrations", "apply", "DB", "--local"], {
	stdio: ["ignore", "inherit", "inherit"],
});
if (migrated !== 0) process.exit(migrated);
if (vars.length > 0) {
	console.log(
		`Local-only tokens: ${Object.entries(LOCAL_TOKENS)
			.filter(([n]) => !defined.has(n))
			.map(([n, v]) => `${n}=${v}`)
			.join(" ")}`,
	);
}
// --test-scheduled adds GET /__scheduled, which runs the whole cron once: retention (with the
// stats rollup first), then the reconcile.
process.exit(
	await wrangler(["dev", "--ip", "127.0.0.1", "--port", port, "--test-scheduled", ...vars]),
);
