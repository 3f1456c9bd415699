import { describe, expect, it } from "vitest";
import { definedSecrets, secretNames } from "../../scripts/start-options.mjs";

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
	});

	it("ignores .env when .dev.vars exists, even an empty one", () => {
		const read = files({ ".dev.vars": "", ".env": "CALLBACK_TOKENS=e\n" });
		expect([...definedSecrets(read, {})]).toEqual([]);
	});
});
