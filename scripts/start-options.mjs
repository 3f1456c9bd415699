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

/**
 * The names a .dev.vars or .env text defines, as wrangler's dotenv reads it: `NAME=value` or
 * `NAME: value` lines, `export` before the name allowed, `#` comments; a value quoted over
 * several lines defines one name, whatever its later lines look like.
 */
export function secretNames(text) {
	const names = [];
	let open = null; // the quote of a value that goes on to later lines
	for (const line of text.split(/\r\n?|\n/)) {
		if (open !== null) {
			if (line.includes(open)) open = null;
			continue;
		}
		const match = /^\s*(?:export\s+)?([\w.-]+)(?:\s*=|:\s)\s*(.*)$/.exec(line);
		if (!match) continue;
		names.push(match[1]);
		const quote = /^["'`]/.exec(match[2])?.[0];
		if (quote && !match[2].slice(1).includes(quote)) open = quote;
	}
	return names;
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
