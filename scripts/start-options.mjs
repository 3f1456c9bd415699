// What `npm start` decides before it runs wrangler, as pure functions so they can be tested.

// dotenv's own line pattern (the parser wrangler reads these files with): `NAME=value` or
// `NAME: value`, `export` before it, a value quoted over several lines.
const LINE =
	/(?:^|^)\s*(?:export\s+)?([\w.-]+)(?:\s*=\s*?|:\s+?)(\s*'(?:\\'|[^'])*'|\s*"(?:\\"|[^"])*"|\s*`(?:\\`|[^`])*`|[^#\r\n]+)?\s*(?:#.*)?(?:$|$)/gm;

/** The names a .dev.vars or .env text defines, as wrangler's dotenv parses it. */
export function secretNames(text) {
	return [...text.replace(/\r\n?/g, "\n").matchAll(LINE)].map((match) => match[1]);
}

/**
 * The names `wrangler dev` has a value for from the files it reads secrets from: .dev.vars, or
 * when there is none, .env and .env.local (unless CLOUDFLARE_LOAD_DEV_VARS_FROM_DOT_ENV=false),
 * then with CLOUDFLARE_INCLUDE_PROCESS_ENV=true the environment too. A name missing here gets a
 * local-only `--var`, which would override the developer's own value, so this must not miss one.
 * `read(file)` is the file's text, or undefined when there is no such file.
 */
export function definedSecrets(read, env) {
	const devVars = read(".dev.vars");
	if (devVars !== undefined) return new Set(secretNames(devVars));
	if (env.CLOUDFLARE_LOAD_DEV_VARS_FROM_DOT_ENV?.toLowerCase() === "false") return new Set();
	const names = [".env", ".env.local"].flatMap((file) => secretNames(read(file) ?? ""));
	if (env.CLOUDFLARE_INCLUDE_PROCESS_ENV?.toLowerCase() === "true") names.push(...Object.keys(env));
	return new Set(names);
}
