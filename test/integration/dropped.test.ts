import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { call, countRows, postCallback, resetDatabase, tokens } from "../helpers";

type ErrorBody = { error: { code: string; message: string } };

beforeEach(resetDatabase);

describe("an object that names a member twice", () => {
	// JSON.parse keeps the last value of a repeated name, so the first would be lost without a
	// trace, and two different bodies would share one idempotency key.
	it.each([
		[
			"a bounce whose event is named again",
			'{"event":"bounce","bounceType":"hard_bounce","email":"a@example.com","timestamp":1767225600,"event":"delivered"}',
			'"event"',
		],
		[
			"an unknown field, nested",
			'{"event":"open","email":"a@example.com","timestamp":1767225600,"x":{"y":1,"y":2}}',
			'"y"',
		],
		[
			"a name written once escaped",
			'[{"event":"open","email":"a@example.com","timestamp":1767225600,"a":1,"\\u0061":2}]',
			'"a"',
		],
	])("is refused and recorded: %s", async (_name, raw, member) => {
		const response = await postCallback(raw);
		expect(response.status).toBe(400);
		const body = (await response.json()) as ErrorBody;
		expect(body.error.code).toBe("invalid_json");
		expect(body.error.message).toContain(member);
		expect(await countRows("events")).toBe(0);
		const rejected = await env.DB.prepare("SELECT id, body FROM rejected_callbacks").all<{
			id: string;
			body: number[];
		}>();
		expect(rejected.results).toHaveLength(1);
		expect(new TextDecoder().decode(new Uint8Array(rejected.results[0]?.body ?? []))).toBe(raw);
		// Today's validation refuses it again, rather than storing one of its readings.
		const replay = await call(`/v1/rejected/${rejected.results[0]?.id}/replay`, {
			method: "POST",
			headers: { authorization: `Bearer ${tokens.admin}` },
		});
		expect(replay.status).toBe(422);
		expect(await countRows("events")).toBe(0);
	});

	it("names a long repeated member by its first 100 characters only", async () => {
		const name = "k".repeat(50_000);
		const raw = `{"event":"open","email":"a@example.com","timestamp":1767225600,"${name}":1,"${name}":2}`;
		const response = await postCallback(raw);
		expect(response.status).toBe(400);
		const { message } = ((await response.json()) as ErrorBody).error;
		expect(message).toContain(`"${"k".repeat(100)}…"`);
		expect(message.length).toBeLessThan(300);
		expect(await countRows("events")).toBe(0);
		expect(await countRows("rejected_callbacks")).toBe(1);
	});

	it("is not confused by a value equal to a name, or one name in two objects", async () => {
		const raw = JSON.stringify([
			{ event: "open", email: "a@example.com", timestamp: 1767225600, x: "event", y: { x: 1 } },
			{
				event: "open",
				email: "a@example.com",
				timestamp: 1767225601,
				s: 'a"b:\\',
				z: [{ x: 1 }, { x: 2 }],
			},
		]);
		const response = await postCallback(raw);
		expect(await response.json()).toEqual({ ok: true, received: 2, stored: 2, duplicates: 0 });
	});

	it("keeps two bodies that differ only in a repeated name apart", async () => {
		const once = '{"event":"open","email":"a@example.com","timestamp":1767225600,"x":"2"}';
		expect((await postCallback(once)).status).toBe(200);
		const twice = '{"event":"open","email":"a@example.com","timestamp":1767225600,"x":"1","x":"2"}';
		expect((await postCallback(twice)).status).toBe(400);
	});
});
