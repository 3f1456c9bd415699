import { describe, expect, it } from "vitest";
import {
	configFile,
	missingSecrets,
	placeholderProblems,
	splitDeployFlags,
} from "../../scripts/deploy-checks.mjs";
import shipped from "../../wrangler.toml?raw";

describe("npm run deploy preconditions", () => {
	it("refuses the wrangler.toml as shipped, naming both placeholder ids", () => {
		const problems = placeholderProblems(shipped);
		expect(problems).toHaveLength(2);
		expect(problems[0]).toContain("database_id");
		expect(problems[1]).toContain("KV namespace id");
	});

	it("names the file it read, which --config may choose", () => {
		const problems = placeholderProblems(shipped, "deploy/eu/prod.toml");
		expect(problems).toHaveLength(2);
		for (const problem of problems) expect(problem).toMatch(/^deploy\/eu\/prod\.toml still has/);
	});

	it("accepts real ids", () => {
		const real = shipped
			.replace(/database_id = "[^"]*"/, 'database_id = "5f0c1d7e-3b2a-4c8e-9d1f-6a7b8c9d0e1f"')
			.replace(/^id = "0+"/m, 'id = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"');
		expect(placeholderProblems(real)).toEqual([]);
	});

	it("names the secrets that are missing", () => {
		expect(missingSecrets('[{"name":"CALLBACK_TOKENS","type":"secret_text"}]')).toEqual([
			"LOOKUP_TOKENS",
			"ADMIN_TOKENS",
		]);
		expect(
			missingSecrets(
				'[{"name":"ADMIN_TOKENS"},{"name":"LOOKUP_TOKENS"},{"name":"CALLBACK_TOKENS"}]',
			),
		).toEqual([]);
		expect(missingSecrets("not json")).toEqual([
			"CALLBACK_TOKENS",
			"LOOKUP_TOKENS",
			"ADMIN_TOKENS",
		]);
	});

	it("passes only wrangler's global flags to the secret check and the migrations", () => {
		expect(
			splitDeployFlags(["--env", "staging", "--minify", "-c=other.toml", "--keep-vars"]),
		).toEqual({ shared: ["--env", "staging", "-c=other.toml"], dryRun: false });
		expect(splitDeployFlags(["-e", "production", "--profile", "work"]).shared).toEqual([
			"-e",
			"production",
			"--profile",
			"work",
		]);
	});

	it("checks the configuration file that is deployed: --config, in --cwd", () => {
		const file = (args: string[]) => configFile(splitDeployFlags(args).shared);
		expect(file([])).toBe("wrangler.toml");
		expect(file(["--env", "staging", "--keep-vars"])).toBe("wrangler.toml");
		expect(file(["--config", "prod.toml"])).toBe("prod.toml");
		expect(file(["-c=prod.toml", "--cwd", "deploy/eu"])).toBe("deploy/eu/prod.toml");
		expect(file(["--cwd=deploy/eu"])).toBe("deploy/eu/wrangler.toml");
		expect(file(["--config=conf/region=eu.toml"])).toBe("conf/region=eu.toml");
		expect(file(["--config", "/etc/worker/prod.toml", "--cwd", "deploy"])).toBe(
			"/etc/worker/prod.toml",
		);
	});

	it("recognises a dry run, which touches nothing remote", () => {
		expect(splitDeployFlags(["--dry-run"])).toEqual({ shared: [], dryRun: true });
		expect(splitDeployFlags(["--env=staging", "--dry-run=true"])).toEqual({
			shared: ["--env=staging"],
			dryRun: true,
		});
		expect(splitDeployFlags(["--dry-run=false"]).dryRun).toBe(false);
		expect(splitDeployFlags([]).dryRun).toBe(false);
	});
});
