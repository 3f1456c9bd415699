// Preconditions of `npm run deploy`, as pure functions so they can be tested without Cloudflare.
import { isAbsolute, join } from "node:path";

/** The secrets a deployed Worker needs; it answers 503 not_configured without them. */
const REQUIRED_SECRETS = ["CALLBACK_TOKENS", "LOOKUP_TOKENS", "ADMIN_TOKENS"];

/**
 * Problems with the resource ids in the configuration file (`file`, named in the messages): ids
 * still the all-zero placeholders the repository ships with, for the D1 database and the KV
 * namespace.
 */
export function placeholderProblems(toml, file = "wrangler.toml") {
	const problems = [];
	const value = (pattern) => pattern.exec(toml)?.[1];
	const zero = (id) => id === undefined || /^[0-]+$/.test(id);
	if (zero(value(/^\s*database_id\s*=\s*"([^"]*)"/m))) {
		problems.push(
			`${file} still has the placeholder D1 database_id: run \`npx wrangler d1 create tencent-ses-events\` and put the id it prints in [[d1_databases]] (docs/deploy.md, step 2).`,
		);
	}
	const kv = /\[\[kv_namespaces\]\][^[]*?^\s*id\s*=\s*"([^"]*)"/ms.exec(toml)?.[1];
	if (zero(kv)) {
		problems.push(
			`${file} still has the placeholder KV namespace id: run \`npx wrangler kv namespace create SUPPRESSIONS\` and put the id it prints in [[kv_namespaces]] (docs/deploy.md, step 2).`,
		);
	}
	return problems;
}

/** The required secrets missing from the JSON that `wrangler secret list --format json` prints. */
export function missingSecrets(listJson) {
	let names;
	try {
		const parsed = JSON.parse(listJson);
		names = new Set(Array.isArray(parsed) ? parsed.map((secret) => secret?.name) : []);
	} catch {
		return [...REQUIRED_SECRETS];
	}
	return REQUIRED_SECRETS.filter((name) => !names.has(name));
}

// wrangler's global flags that take a value: they choose the config, the environment and the
// account, so `secret list` and `d1 migrations apply` must see them as `deploy` does.
const GLOBAL_FLAGS = new Set(["-c", "--config", "--cwd", "-e", "--env", "--env-file", "--profile"]);

/**
 * Splits the flags given to `npm run deploy -- ...`: `shared` are the global ones (with their
 * values), which every wrangler command takes; the rest are `deploy`'s own (`--dry-run`,
 * `--minify`, `--keep-vars`, ...), which `secret list` and `d1 migrations apply` refuse as unknown.
 */
export function splitDeployFlags(args) {
	const shared = [];
	let dryRun = false;
	for (let i = 0; i < args.length; i++) {
		const arg = args[i];
		const name = arg.split("=", 1)[0];
		if (GLOBAL_FLAGS.has(name)) {
			shared.push(arg);
			if (!arg.includes("=") && i + 1 < args.length) shared.push(args[++i]);
		} else if (name === "--dry-run" || name === "--dryRun") {
			dryRun = !/^--dry-?[rR]un=(false|0)$/.test(arg);
		}
	}
	return { shared, dryRun };
}

/**
 * The configuration file that wrangler reads given the global flags `splitDeployFlags` picked:
 * `--config` (or `-c`), else wrangler.toml, in `--cwd` when given. The placeholder check must
 * read the file that is deployed, not the repository's own wrangler.toml.
 */
export function configFile(shared) {
	const values = new Map();
	for (let i = 0; i < shared.length; i++) {
		const [name, inline] = shared[i].split(/=(.*)/s, 2);
		values.set(name, inline ?? shared[++i]);
	}
	const config = values.get("--config") ?? values.get("-c") ?? "wrangler.toml";
	return isAbsolute(config) ? config : join(values.get("--cwd") ?? ".", config);
}
