import { describe, expect, it } from "vitest";
import shipped from "../../package-lock.json?raw";
import { missingPlatformBuilds } from "../../scripts/lockfile.mjs";

const optional = (...names: string[]) => ({
	optionalDependencies: Object.fromEntries(names.map((name) => [name, "1.0.0"])),
});

describe("npm run check: the lockfile holds every platform's build", () => {
	it("holds them in the lockfile as committed", () => {
		expect(missingPlatformBuilds(JSON.parse(shipped))).toEqual([]);
	});

	it("names each build a package lists and the lockfile lacks", () => {
		// What `npm install` writes when the registry has only the Linux builds of a new version.
		const lock = {
			packages: {
				"": { devDependencies: { tool: "2.0.0" } },
				"node_modules/tool": optional("@tool/linux-x64", "@tool/darwin-arm64", "@tool/win32-x64"),
				"node_modules/@tool/linux-x64": { version: "2.0.0" },
			},
		};
		expect(missingPlatformBuilds(lock)).toEqual([
			"node_modules/tool -> @tool/darwin-arm64",
			"node_modules/tool -> @tool/win32-x64",
		]);
	});

	it("finds a build where Node would: nested first, then each enclosing node_modules", () => {
		const lock = {
			packages: {
				"": optional("fsevents"),
				"node_modules/fsevents": {},
				"node_modules/a": optional("@b/x"),
				"node_modules/a/node_modules/@b/x": {},
				"node_modules/@s/c/node_modules/d": optional("@b/x", "fsevents", "e"),
				"node_modules/@s/c/node_modules/e": {},
			},
		};
		// @b/x is nested under a, where d cannot see it; e is its sibling in @s/c's node_modules.
		expect(missingPlatformBuilds(lock)).toEqual(["node_modules/@s/c/node_modules/d -> @b/x"]);
		expect(missingPlatformBuilds({ packages: { "": optional("x") } })).toEqual(["(root) -> x"]);
		expect(missingPlatformBuilds({})).toEqual([]);
	});
});
