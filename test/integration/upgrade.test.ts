import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { writeEdge } from "../../src/suppressions/edge";
import type { StoredEntry } from "../../src/suppressions/entry";
import { call, getJson, lookup, postCallback, resetDatabase, runCron, tokens } from "../helpers";

// A deployed database applied the migrations of its release and holds rows its Worker wrote; a
// deploy applies the newer migrations over those rows. These tests build a database at an earlier
// level, write rows as the Worker of that level did, apply the rest and ask the current Worker.

const MIGRATIONS = env.TEST_MIGRATIONS;

/** Drops every table of the schema, then applies the first `level` migrations. */
async function migrateTo(level: number): Promise<void> {
	const { results } = await env.DB.prepare(
		"SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_cf_%'",
	).all<{ name: string }>();
	for (const { name } of results) await env.DB.prepare(`DROP TABLE "${name}"`).run();
	await applyMigrations(0, level);
}

/** Applies migrations `from` (0-based) up to `to`, each in one transaction as wrangler does. */
async function applyMigrations(from: number, to = MIGRATIONS.length): Promise<void> {
	for (const migration of MIGRATIONS.slice(from, to)) {
		await env.DB.batch(migration.queries.map((query) => env.DB.prepare(query)));
	}
}

/** Level of the migration named `prefix` (its number): the level once it has been applied. */
function levelOf(prefix: string): number {
	return MIGRATIONS.findIndex((migration) => migration.name.startsWith(prefix)) + 1;
}

async function check(emails: string[], fromDomain: string): Promise<Record<string, boolean>> {
	const response = await call("/v1/suppressions/check", {
		method: "POST",
		headers: { authorization: `Bearer ${tokens.lookup}` },
		body: JSON.stringify({ emails, fromDomain }),
	});
	const { results } = (await response.json()) as {
		results: Array<{ email: string; suppressed: boolean }>;
	};
	return Object.fromEntries(results.map((result) => [result.email, result.suppressed]));
}

/** An unsubscribe entry as the Worker stored it from an event, and its KV key as it wrote it. */
async function storeUnsubscribe(email: string, scope: string, at: number, count = 1) {
	const entry: StoredEntry = {
		email,
		list: "unsubscribe",
		scope,
		origin: "event",
		reason: `unsubscribed ${scope}`,
		eventCount: count,
		lastEventAt: at,
		bulkId: null,
		createdAt: at,
		updatedAt: at,
		expiresAt: null,
	};
	await env.DB.prepare(
		`INSERT INTO suppressions (email, list, scope, origin, reason, event_count, last_event_at,
			event_id, created_at, updated_at, change_event_id, change_note)
		VALUES (?1, 'unsubscribe', ?2, 'event', ?3, ?4, ?5, ?6, ?5, ?5, ?6, ?3)`,
	)
		.bind(email, scope, entry.reason, count, at, `event-${email}-${scope}`)
		.run();
	return entry;
}

describe("unsubscribes an earlier version scoped to no sender domain", () => {
	it("apply to every sender after the upgrade, in D1 and in KV", async () => {
		await resetDatabase();
		await migrateTo(levelOf("0013"));
		const at = Math.floor(Date.now() / 1000) - 3600;
		// A display-form from without fromDomain gave "example.com>" (before the normaliser took the
		// address out of it); a fromDomain that was an address or a list was the scope as received.
		const stored = new Map<string, StoredEntry[]>([
			["display@example.org", [await storeUnsubscribe("display@example.org", "example.com>", at)]],
			[
				"two@example.org",
				[
					await storeUnsubscribe("two@example.org", "news@example.com", at, 2),
					await storeUnsubscribe("two@example.org", "a.example, b.example", at + 10),
				],
			],
			[
				"merged@example.org",
				[
					await storeUnsubscribe("merged@example.org", "*", at + 20, 3),
					await storeUnsubscribe("merged@example.org", "https://example.com/", at),
				],
			],
			["fine@example.org", [await storeUnsubscribe("fine@example.org", "example.net", at)]],
		]);
		for (const [email, entries] of stored) await writeEdge(env.SUPPRESSIONS, email, entries, at);
		const emails = [...stored.keys()];

		await applyMigrations(levelOf("0013"));
		// The cron's first run at least 2 minutes after the change puts the moved entries in KV.
		await runCron(Date.now() + 180_000);

		for (const consistent of ["", "&consistent=true"]) {
			for (const email of ["display@example.org", "two@example.org", "merged@example.org"]) {
				const answer = await lookup(email, `?fromDomain=example.com${consistent}`);
				expect({ email, consistent, suppressed: answer.suppressed }).toEqual({
					email,
					consistent,
					suppressed: true,
				});
			}
		}
		expect(await check(emails, "example.com")).toEqual({
			"display@example.org": true,
			"two@example.org": true,
			"merged@example.org": true,
			"fine@example.org": false,
		});
		expect((await lookup("fine@example.org", "?fromDomain=example.net")).suppressed).toBe(true);

		// Two moved entries, or a moved one and the address's own "*" entry, make one entry whose
		// count is theirs together and whose details come from the later evidence.
		const two = await lookup("two@example.org", "?consistent=true");
		expect(two.entries).toMatchObject([
			{
				list: "unsubscribe",
				scope: "*",
				eventCount: 3,
				reason: "unsubscribed a.example, b.example",
			},
		]);
		const merged = await lookup("merged@example.org", "?consistent=true");
		expect(merged.entries).toMatchObject([
			{ list: "unsubscribe", scope: "*", eventCount: 4, reason: "unsubscribed *" },
		]);
		const history = await getJson("/v1/suppressions/display%40example.org/history", tokens.admin);
		const lines = ((await history.json()) as { history: Array<Record<string, unknown>> }).history;
		expect(lines.map(({ action, scope }) => `${action} ${scope}`)).toEqual([
			"added example.com>",
			"removed example.com>",
			"added *",
		]);
		// An export of the moved entries imports again (a scope that names no domain was refused).
		const exported = await getJson("/v1/suppressions/export?format=ndjson", tokens.admin);
		expect(exported.status).toBe(200);
		const imported = await call("/v1/suppressions/import", {
			method: "POST",
			headers: { authorization: `Bearer ${tokens.admin}`, "content-type": "application/x-ndjson" },
			body: await exported.text(),
		});
		expect(imported.status).toBe(200);
		expect(((await imported.json()) as { failed: unknown[] }).failed).toEqual([]);
	});

	it("the same unsubscribe given to a database built at this level is suppressed too", async () => {
		await resetDatabase();
		await migrateTo(MIGRATIONS.length);
		const response = await postCallback({
			event: "unsubscribe",
			email: "display@example.org",
			timestamp: Math.floor(Date.now() / 1000) - 3600,
			from: "News <news@example.com>",
		});
		expect(response.status).toBe(200);
		expect(await check(["display@example.org"], "example.com")).toEqual({
			"display@example.org": true,
		});
	});
});
