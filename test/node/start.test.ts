import { describe, expect, it } from "vitest";
import { definedSecrets, parsePort, secretNames } from "../../scripts/start-options.mjs";

const files =
	(contents: Record<string, string>) =>
	(file: string): string | undefined =>
		contents[file];

describe("npm start: the tokens a developer set, which get no local-only --var", () => {
	it("reads .dev.vars as wrangler does: CRLF, a BOM, export, quotes, comments", () => {
		const text =
			'\uFEFFCALLBACK_TOKENS=a\r\nexport LOOKUP_TOKENS="b c"\r\n# ADMIN_TOKENS=commented\r\n';
		expect(secretNames(text)).toEqual(["CALLBACK_TOKENS", "LOOKUP_TOKENS"]);
		expect(secretNames("ADMIN_TOKENS: d\n")).toEqual(["ADMIN_TOKENS"]);
		// A value quoted over several lines defines one name, whatever its lines look like.
		expect(secretNames('CALLBACK_TOKENS="x\nADMIN_TOKENS=y"\n')).toEqual(["CALLBACK_TOKENS"]);
		expect(secretNames("CALLBACK_TOKENS=`x\nLOOKUP_TOKENS=\nADMIN_TOKENS=y`")).toEqual([
			"CALLBACK_TOKENS",
		]);
		// A value quoted on its own line ends there; an old Mac's lone CR ends a line too.
		expect(secretNames('LOOKUP_TOKENS="b c"\nADMIN_TOKENS=d\n')).toEqual([
			"LOOKUP_TOKENS",
			"ADMIN_TOKENS",
		]);
		expect(secretNames("CALLBACK_TOKENS=a\rADMIN_TOKENS=b\r")).toEqual([
			"CALLBACK_TOKENS",
			"ADMIN_TOKENS",
		]);
	});

	it("reads .env and .env.local when there is no .dev.vars, as wrangler does", () => {
		const read = files({ ".env": "CALLBACK_TOKENS=e\n", ".env.local": "ADMIN_TOKENS=f\n" });
		expect([...definedSecrets(read, {})]).toEqual(["CALLBACK_TOKENS", "ADMIN_TOKENS"]);
		expect([...definedSecrets(read, { CLOUDFLARE_LOAD_DEV_VARS_FROM_DOT_ENV: "false" })]).toEqual(
			[],
		);
		expect(
			definedSecrets(files({}), {
				CLOUDFLARE_INCLUDE_PROCESS_ENV: "true",
				LOOKUP_TOKENS: "g",
			}).has("LOOKUP_TOKENS"),
		).toBe(true);
		expect(definedSecrets(files({}), { LOOKUP_TOKENS: "g" }).has("LOOKUP_TOKENS")).toBe(false);
		// wrangler reads both switches in any case.
		expect([...definedSecrets(read, { CLOUDFLARE_LOAD_DEV_VARS_FROM_DOT_ENV: "FALSE" })]).toEqual(
			[],
		);
		expect(
			definedSecrets(files({}), {
				CLOUDFLARE_INCLUDE_PROCESS_ENV: "True",
				LOOKUP_TOKENS: "g",
			}).has("LOOKUP_TOKENS"),
		).toBe(true);
	});

	it("ignores .env when .dev.vars exists, even an empty one", () => {
		const read = files({ ".dev.vars": "", ".env": "CALLBACK_TOKENS=e\n" });
		expect([...definedSecrets(read, {})]).toEqual([]);
	});
});

describe("npm start: the port", () => {
	it("is 8080, or the one given after --", () => {
		expect(parsePort([], {})).toEqual({ port: "8080" });
		expect(parsePort(["--port", "8081"], {})).toEqual({ port: "8081" });
		expect(parsePort(["--port=65535"], {})).toEqual({ port: "65535" });
	});

	it("is the one given before the --, which npm keeps as its config npm_config_port", () => {
		// `npm start --port=8081` runs the script with no argument and npm_config_port=8081.
		expect(parsePort([], { npm_config_port: "8081" })).toEqual({ port: "8081" });
		expect(parsePort(["--port", "8082"], { npm_config_port: "8081" })).toEqual({ port: "8082" });
		// `npm start --port 8081`: npm takes --port as a flag and passes 8081 on as an argument.
		expect(parsePort(["8081"], { npm_config_port: "true" }).error).toContain(
			"`npm start -- --port 8081`",
		);
	});

	it("refuses what is not a port from 1 to 65535", () => {
		for (const args of [["--port", "0"], ["--port", "65536"], ["--port", "abc"], ["--port="]]) {
			expect(parsePort(args, {}).error).toMatch(/^--port takes a port number from 1 to 65535/);
		}
		expect(parsePort(["--port"], {}).error).toContain("argument missing");
		expect(parsePort(["--host", "x"], {}).error).toContain("Unknown option '--host'");
	});
});
