import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { isDomainName, isSenderDomain } from "../../src/email";
import { isoTime } from "../../src/events/event";
import { writeEdge } from "../../src/suppressions/edge";
import type { EntryJson, StoredEntry } from "../../src/suppressions/entry";
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

/** A suppression row as an earlier version may have stored it: every column given. */
interface OldRow {
	email: string;
	list?: string;
	scope: string;
	origin?: string;
	reason?: string | null;
	count?: number;
	lastEventAt: number | null;
	bulkId?: string | null;
	eventId?: string | null;
	createdAt: number;
	expiresAt?: number | null;
}

async function storeRows(rows: OldRow[]): Promise<void> {
	const insert = env.DB.prepare(
		`INSERT INTO suppressions (email, list, scope, origin, reason, event_count, last_event_at,
			bulk_id, event_id, created_at, updated_at, expires_at, change_event_id, change_note)
		VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?9, ?5)`,
	);
	await env.DB.batch(
		rows.map((row) =>
			insert.bind(
				row.email,
				row.list ?? "unsubscribe",
				row.scope,
				row.origin ?? "event",
				row.reason ?? null,
				row.count ?? 1,
				row.lastEventAt,
				row.bulkId ?? null,
				row.eventId ?? null,
				row.createdAt,
				row.expiresAt ?? null,
			),
		),
	);
}

/** Orders rows by their values, so that two lists of rows compare whatever order SQL gave. */
function order(a: Record<string, unknown>, b: Record<string, unknown>): number {
	return JSON.stringify(Object.values(a)) < JSON.stringify(Object.values(b)) ? -1 : 1;
}

/** The address's history as `action scope` lines, oldest first. */
async function historyOf(email: string): Promise<Array<Record<string, unknown>>> {
	const response = await getJson(
		`/v1/suppressions/${encodeURIComponent(email)}/history`,
		tokens.admin,
	);
	return ((await response.json()) as { history: Array<Record<string, unknown>> }).history;
}

describe("migration 0014", () => {
	it("moves each scope that names no sender domain, and no other entry", async () => {
		await resetDatabase();
		await migrateTo(levelOf("0013"));
		const now = Math.floor(Date.now() / 1000);
		const at = now - 3600;
		// Every character the policy's domain check refuses (white space as JavaScript's \s reads
		// it) and the brackets of a display-form address, first in the scope; an empty scope; one
		// longer than a domain name may be.
		const refused = [
			..."@/*,<> \t\n\v\f\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff",
		].map((c) => `${c}example.com`);
		refused.push("", "a".repeat(254));
		expect(refused.filter(isDomainName)).toEqual(["<example.com", ">example.com"]);
		const moved = refused.map((scope, i) => ({ email: `m${i}@example.org`, scope }));
		const longest = `${"a".repeat(63)}.`.repeat(3) + "a".repeat(61);
		const kept = [
			{ email: "kept@example.org", scope: "example.net" },
			{ email: "kept@example.org", scope: longest },
			{ email: "kept@example.org", scope: "bücher.example" },
			// An operator's entry, a bounce entry, and an entry that has expired stay as they are.
			{ email: "api@example.org", scope: "a,b.example", origin: "api" },
			{ email: "other@example.org", scope: "a@b.example", list: "bounce" },
			{ email: "expired@example.org", scope: "c,d.example", expiresAt: now - 600 },
		];
		await storeRows(
			[
				...moved,
				...kept,
				// Beside a moved entry of the same address and scope, or of the same address.
				{ email: "api@example.org", scope: "a,b.example" },
				{ email: "other@example.org", scope: "a@b.example" },
				{ email: "kept@example.org", scope: "x y.example" },
			].map((row) => ({ ...row, lastEventAt: at, createdAt: at })),
		);
		expect(kept.every(({ scope }) => isDomainName(scope) === !/[@,]/.test(scope))).toBe(true);

		await applyMigrations(levelOf("0013"));

		const { results } = await env.DB.prepare(
			"SELECT email, list, scope, origin FROM suppressions ORDER BY email, list, scope, origin",
		).all();
		const row = ({ email, scope, list = "unsubscribe", origin = "event" }: Partial<OldRow>) => ({
			email,
			list,
			scope,
			origin,
		});
		const expected = [
			...moved.map(({ email }) => row({ email, scope: "*" })),
			...kept.map(row),
			row({ email: "api@example.org", scope: "*" }),
			row({ email: "other@example.org", scope: "*" }),
			row({ email: "kept@example.org", scope: "*" }),
		];
		expect([...results].sort(order)).toEqual(expected.sort(order));
		const removed = await env.DB.prepare(
			"SELECT email, list, scope FROM suppression_history WHERE action = 'removed' ORDER BY email, scope",
		).all();
		expect([...removed.results].sort(order)).toEqual(
			[
				...moved,
				{ email: "api@example.org", scope: "a,b.example" },
				{ email: "other@example.org", scope: "a@b.example" },
				{ email: "kept@example.org", scope: "x y.example" },
			]
				.map(({ email, scope }) => ({ email, list: "unsubscribe", scope }))
				.sort(order),
		);
	});

	it("merges a moved entry into the address's * unsubscribe as two events would", async () => {
		await resetDatabase();
		await migrateTo(levelOf("0013"));
		const now = Math.floor(Date.now() / 1000);
		const at = now - 86_400;
		const day = 86_400;
		await storeRows([
			// No * entry: the moved entry keeps every detail.
			{
				email: "alone@example.org",
				scope: "news@example.com",
				reason: "moved",
				count: 2,
				lastEventAt: at,
				bulkId: "bulk-moved",
				eventId: "event-moved",
				createdAt: at - 50,
				expiresAt: now + 30 * day,
			},
			// An expired * entry (with later evidence) is replaced whole.
			{
				email: "replaced@example.org",
				scope: "*",
				reason: "expired",
				count: 5,
				lastEventAt: at + 100,
				bulkId: "bulk-star",
				eventId: "event-star",
				createdAt: at - 5000,
				expiresAt: now - 600,
			},
			{
				email: "replaced@example.org",
				scope: "a b.example",
				reason: "moved",
				count: 2,
				lastEventAt: at,
				bulkId: "bulk-moved",
				eventId: "event-moved",
				createdAt: at - 100,
			},
			// A live * entry with the later evidence keeps its details; the earlier creation and
			// never expiring win.
			{
				email: "kept@example.org",
				scope: "*",
				reason: "star",
				count: 3,
				lastEventAt: at + 20,
				bulkId: "bulk-star",
				eventId: "event-star",
				createdAt: at - 50,
			},
			{
				email: "kept@example.org",
				scope: "x@y.example",
				reason: "moved",
				count: 2,
				lastEventAt: at,
				bulkId: "bulk-moved",
				eventId: "event-moved",
				createdAt: at - 500,
				expiresAt: now + 30 * day,
			},
			// A moved entry with the later evidence gives its details; the later expiry wins.
			{
				email: "later@example.org",
				scope: "*",
				reason: "star",
				count: 1,
				lastEventAt: at,
				bulkId: "bulk-star",
				eventId: "event-star",
				createdAt: at - 10,
				expiresAt: now + 20 * day,
			},
			{
				email: "later@example.org",
				scope: "<news.example>",
				reason: "moved",
				count: 1,
				lastEventAt: at + 30,
				bulkId: "bulk-moved",
				eventId: "event-moved",
				createdAt: at,
				expiresAt: now + 10 * day,
			},
			// A * entry imported without its evidence's time: any event is later.
			{
				email: "imported@example.org",
				scope: "*",
				reason: "imported",
				lastEventAt: null,
				createdAt: at,
			},
			{
				email: "imported@example.org",
				scope: "a,b.example",
				reason: "moved",
				lastEventAt: at,
				eventId: "event-moved",
				createdAt: at,
			},
		]);

		await applyMigrations(levelOf("0013"));
		const after = Math.floor(Date.now() / 1000);

		const entryOf = async (email: string) => {
			const { entries } = await lookup(email, "?consistent=true");
			expect(entries).toHaveLength(1);
			const { updatedAt, ...entry } = entries[0] as EntryJson;
			expect(Date.parse(updatedAt) / 1000).toBeGreaterThanOrEqual(now);
			expect(Date.parse(updatedAt) / 1000).toBeLessThanOrEqual(after);
			return entry;
		};
		const details = (row: Omit<OldRow, "email" | "scope">) => ({
			list: "unsubscribe",
			scope: "*",
			source: "event",
			reason: row.reason,
			eventCount: row.count,
			lastEventAt: row.lastEventAt === null ? null : isoTime(row.lastEventAt),
			bulkId: row.bulkId ?? null,
			createdAt: isoTime(row.createdAt),
			expiresAt: row.expiresAt == null ? null : isoTime(row.expiresAt),
		});
		expect(await entryOf("alone@example.org")).toEqual(
			details({
				reason: "moved",
				count: 2,
				lastEventAt: at,
				bulkId: "bulk-moved",
				createdAt: at - 50,
				expiresAt: now + 30 * day,
			}),
		);
		expect(await entryOf("replaced@example.org")).toEqual(
			details({
				reason: "moved",
				count: 2,
				lastEventAt: at,
				bulkId: "bulk-moved",
				createdAt: at - 100,
				expiresAt: null,
			}),
		);
		expect(await entryOf("kept@example.org")).toEqual(
			details({
				reason: "star",
				count: 5,
				lastEventAt: at + 20,
				bulkId: "bulk-star",
				createdAt: at - 500,
				expiresAt: null,
			}),
		);
		expect(await entryOf("later@example.org")).toEqual(
			details({
				reason: "moved",
				count: 2,
				lastEventAt: at + 30,
				bulkId: "bulk-moved",
				createdAt: at - 10,
				expiresAt: now + 20 * day,
			}),
		);
		expect(await entryOf("imported@example.org")).toEqual(
			details({ reason: "moved", count: 2, lastEventAt: at, createdAt: at, expiresAt: null }),
		);
		// The evidence that gives the details also breaks a later tie (see evidence-store.ts, NEWER).
		const { results } = await env.DB.prepare(
			"SELECT email, event_id AS eventId FROM suppressions ORDER BY email",
		).all();
		expect(results).toEqual([
			{ email: "alone@example.org", eventId: "event-moved" },
			{ email: "imported@example.org", eventId: "event-moved" },
			{ email: "kept@example.org", eventId: "event-star" },
			{ email: "later@example.org", eventId: "event-moved" },
			{ email: "replaced@example.org", eventId: "event-moved" },
		]);

		const note = "this scope names no sender domain: the entry now applies to every sender";
		const line = (action: string, scope: string, fields: Record<string, unknown> = {}) => ({
			action,
			list: "unsubscribe",
			scope,
			source: "event",
			eventId: null,
			...fields,
		});
		const moved = (scope: string) => `moved from scope ${scope}, which names no sender domain`;
		// The expired line is dated at the expiry, before the rows this test wrote just now.
		expect(await historyOf("replaced@example.org")).toEqual([
			expect.objectContaining(
				line("expired", "*", { source: "cron", note: null, at: isoTime(now - 600) }),
			),
			expect.objectContaining(line("added", "*", { eventId: "event-star", note: "expired" })),
			expect.objectContaining(
				line("added", "a b.example", { eventId: "event-moved", note: "moved" }),
			),
			expect.objectContaining(line("removed", "a b.example", { note })),
			expect.objectContaining(line("added", "*", { note: moved("a b.example") })),
		]);
		expect((await historyOf("alone@example.org")).slice(1)).toEqual([
			expect.objectContaining(line("removed", "news@example.com", { note })),
			expect.objectContaining(line("added", "*", { note: moved("news@example.com") })),
		]);
		expect((await historyOf("kept@example.org")).slice(2)).toEqual([
			expect.objectContaining(line("removed", "x@y.example", { note })),
			expect.objectContaining(line("renewed", "*", { note: moved("x@y.example") })),
		]);
	});
});

/** Rows as the Worker of every release since suppression lists (migration 0002) wrote them. */
async function storeOldRows(level: number, now: number): Promise<void> {
	const hard: StoredEntry = {
		email: "hard@example.org",
		list: "bounce",
		scope: "*",
		origin: "event",
		reason: "550 no such user",
		eventCount: 1,
		lastEventAt: now - 7200,
		bulkId: null,
		createdAt: now - 7200,
		updatedAt: now - 7200,
		expiresAt: null,
	};
	const insertEvent = env.DB.prepare(
		`INSERT INTO events (id, event, email, from_domain, bounce_type, occurred_at, received_at)
		VALUES (?1, ?2, ?3, 'example.com', ?4, ?5, ?5)`,
	);
	await env.DB.batch([
		insertEvent.bind("old-hard", "bounce", hard.email, "hard", now - 7200),
		insertEvent.bind("old-delivered", "delivered", "soft@example.org", null, now - 7100),
		env.DB.prepare(
			`INSERT INTO suppressions (email, list, scope, origin, reason, event_count, last_event_at,
				event_id, created_at, updated_at, expires_at, change_event_id, change_note)
			VALUES (?1, 'bounce', '*', 'event', ?2, 1, ?3, 'old-hard', ?3, ?3, NULL, 'old-hard', ?2)`,
		).bind(hard.email, hard.reason, now - 7200),
		// A soft-bounce entry that ran out before the upgrade, which no cron retired yet.
		env.DB.prepare(
			`INSERT INTO suppressions (email, list, scope, origin, reason, event_count, last_event_at,
				event_id, created_at, updated_at, expires_at, change_event_id, change_note)
			VALUES ('soft@example.org', 'bounce', '*', 'soft', 'mailbox full', 3, ?1, 'old-soft', ?1, ?1, ?2,
				'old-soft', 'mailbox full')`,
		).bind(now - 86_400 * 20, now - 600),
		// An operator lifted the bounce entry of removed@, whose bounce may still arrive late.
		env.DB.prepare(
			`INSERT INTO suppression_removals (email, list, scope, removed_at)
			VALUES ('removed@example.org', 'bounce', '*', ?1)`,
		).bind(now - 3600),
		env.DB.prepare(
			`INSERT INTO rejected_callbacks (id, received_at, status, code, message, issues,
				content_type, body, body_bytes)
			VALUES ('old-refusal', ?1, 400, 'invalid_json', 'The body is not JSON', NULL,
				'application/json', CAST('{' AS BLOB), 1)`,
		).bind(now - 300),
	]);
	if (level >= levelOf("0005")) {
		await env.DB.prepare(
			"INSERT OR IGNORE INTO edge_pending (email) VALUES ('hard@example.org')",
		).run();
	}
	if (level >= levelOf("0007")) {
		await env.DB.prepare(
			"INSERT INTO soft_bounce_recheck (email) VALUES ('soft@example.org')",
		).run();
	}
	await writeEdge(env.SUPPRESSIONS, hard.email, [hard], now);
}

describe("migration 0015", () => {
	it("moves each scope with a special 0014 left, and suppresses the address for its sender", async () => {
		await resetDatabase();
		await migrateTo(levelOf("0014"));
		const now = Math.floor(Date.now() / 1000);
		const at = now - 3600;
		// Each of RFC 5322's specials that 0014 did not move, at the start, inside and at the end.
		const specials = [...'()[]\\;:"'];
		const refused = specials.flatMap((c) => [
			`${c}example.com`,
			`exa${c}mple.com`,
			`example.com${c}`,
		]);
		expect(refused.filter(isSenderDomain)).toEqual([]);
		expect(refused.every(isDomainName)).toBe(true);
		const moved = refused.map((scope, i) => ({ email: `m${i}@example.org`, scope }));
		const kept = [
			{ email: "kept@example.org", scope: "example.net" },
			{ email: "kept@example.org", scope: "bücher.example" },
			{ email: "kept@example.org", scope: "xn--bcher-kva.example" },
			// An operator's entry, a bounce entry, and an entry that has expired stay as they are.
			{ email: "api@example.org", scope: "[example.com]", origin: "api" },
			{ email: "other@example.org", scope: "example.com;", list: "bounce" },
			{ email: "expired@example.org", scope: "example.com:", expiresAt: now - 600 },
		];
		await storeRows(
			[
				...moved,
				...kept,
				// Beside the address's own * entry, which the moved one merges into.
				{ email: "star@example.org", scope: "*", count: 2 },
				{ email: "star@example.org", scope: "(example.com)", count: 3 },
			].map((row) => ({ ...row, lastEventAt: at, createdAt: at })),
		);

		await applyMigrations(levelOf("0014"));

		const { results } = await env.DB.prepare(
			"SELECT email, list, scope, origin, event_count AS count FROM suppressions",
		).all();
		const row = ({
			email,
			scope,
			list = "unsubscribe",
			origin = "event",
			count = 1,
		}: Partial<OldRow>) => ({
			email,
			list,
			scope,
			origin,
			count,
		});
		expect([...results].sort(order)).toEqual(
			[
				...moved.map(({ email }) => row({ email, scope: "*" })),
				...kept.map(row),
				row({ email: "star@example.org", scope: "*", count: 5 }),
			].sort(order),
		);
		const removed = await env.DB.prepare(
			"SELECT email, scope FROM suppression_history WHERE action = 'removed'",
		).all();
		expect([...removed.results].sort(order)).toEqual(
			[...moved, { email: "star@example.org", scope: "(example.com)" }]
				.map(({ email, scope }) => ({ email, scope }))
				.sort(order),
		);

		// The cron's first run at least 2 minutes after the change puts the moved entries in KV.
		await runCron(Date.now() + 180_000);
		const emails = [...moved.map(({ email }) => email), "star@example.org"];
		const suppressed = Object.fromEntries(emails.map((email) => [email, true]));
		expect(await check(emails, "example.com")).toEqual(suppressed);
		for (const email of ["m0@example.org", "star@example.org"]) {
			expect((await lookup(email, "?fromDomain=example.com")).suppressed).toBe(true);
		}
	});
});

describe("a database of every earlier release", () => {
	// Level 1 had no suppression lists: its events made no entries (see the report on 0002).
	const levels = Array.from({ length: MIGRATIONS.length - 1 }, (_, i) => i + 2);

	it.each(levels)("answers after the upgrade from migration %i as it did before", async (level) => {
		await resetDatabase();
		await migrateTo(level);
		const now = Math.floor(Date.now() / 1000);
		await storeOldRows(level, now);
		await applyMigrations(level);
		await runCron(Date.now() + 180_000);

		expect((await lookup("hard@example.org", "?fromDomain=example.com")).suppressed).toBe(true);
		expect(await check(["hard@example.org", "soft@example.org"], "example.com")).toEqual({
			"hard@example.org": true,
			"soft@example.org": false,
		});
		const history = await getJson("/v1/suppressions/soft%40example.org/history", tokens.admin);
		const lines = ((await history.json()) as { history: Array<Record<string, unknown>> }).history;
		// Sorted: since 0006 a line's time is when it was written, which here is after the expiry.
		expect(lines.map(({ action, source }) => `${action} ${source}`).sort()).toEqual([
			"added event",
			"expired cron",
		]);
		// A bounce that occurred before the operator's removal does not bring the entry back.
		await postCallback({
			event: "bounce",
			bounceType: "hard_bounce",
			email: "removed@example.org",
			timestamp: now - 7200,
		});
		expect((await lookup("removed@example.org", "?consistent=true")).suppressed).toBe(false);
		// The queues the Worker of that release filled are drained.
		const queued = await env.DB.prepare(
			"SELECT (SELECT count(*) FROM edge_pending) + (SELECT count(*) FROM soft_bounce_recheck) AS n",
		).first<{ n: number }>();
		expect(queued?.n).toBe(0);
		// The refused callback counts towards the bound, and is listed.
		const storage = await env.DB.prepare(
			"SELECT bytes, (SELECT sum(kept_bytes) FROM rejected_callbacks) AS kept FROM rejected_storage",
		).first<{ bytes: number; kept: number }>();
		expect(storage?.bytes).toBe(storage?.kept);
		const rejected = await getJson("/v1/rejected");
		expect(((await rejected.json()) as { rejected: unknown[] }).rejected).toHaveLength(1);
		// Events counted by the trigger of 0003, or after it by the cron, are counted once; the
		// events stored before 0003 had no rollups (0003 made none for them). The late bounce
		// above is stored and counted.
		const day = new Date((now - 7200) * 1000).toISOString().slice(0, 10);
		const stats = await getJson(`/v1/stats?since=${day}`);
		const { totals } = (await stats.json()) as { totals: Record<string, number> };
		const counted = level >= levelOf("0003") ? 1 : 0;
		expect({ delivered: totals.delivered, hardBounce: totals.hardBounce }).toEqual({
			delivered: counted,
			hardBounce: counted + 1,
		});
	});
});
