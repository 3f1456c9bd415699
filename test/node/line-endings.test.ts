import { describe, expect, it } from "vitest";

// The repository's .gitattributes, if it has one.
const [attributes = ""] = Object.values(
	import.meta.glob<string>("../../.gitattributes", {
		query: "?raw",
		import: "default",
		eager: true,
	}),
);

describe("line endings of a checkout", () => {
	// Git for Windows checks text files out with CRLF by default (core.autocrlf=true). Biome
	// formats to LF and `wrangler types --check` compares bytes, so `npm run check` would fail on
	// every file of such a checkout unless the repository says LF.
	it("are LF on every system: .gitattributes says so for every text file", () => {
		expect(attributes.split(/\r?\n/)).toContain("* text=auto eol=lf");
	});
});
