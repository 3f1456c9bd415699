// What `npm start` decides before it runs wrangler, as pure functions so they can be tested.
import { parseArgs } from "node:util";

/**
 * The port of `npm start -- --port N`, 8080 without one, or the message to refuse with. Given
 * before the `--` (`npm start --port=N`), the option never reaches the script: npm keeps it as its
 * own config, npm_config_port, which is read too, rather than serving quietly on 8080.
 */
export function parsePort(args, env) {
	let port;
	try {
		port = parseArgs({ args, options: { port: { type: "string" } } }).values.port;
	} catch (error) {
		return { error: `${error.message} (the one option is --port: \`npm start -- --port 8081\`).` };
	}
	port ??= env.npm_config_port ?? "8080";
	if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
		return { error: `--port takes a port number from 1 to 65535, not ${JSON.stringify(port)}.` };
	}
	return { port };
}

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
