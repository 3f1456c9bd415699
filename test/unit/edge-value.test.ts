import { describe, expect, it } from "vitest";
import { MAX_EDGE_VALUE_BYTES, renderEdgeValue } from "../../src/suppressions/edge-format";
import type { StoredEntry } from "../../src/suppressions/entry";

const entry = (scope: string, reason: string): StoredEntry => ({
	email: "many@example.com",
	list: "unsubscribe",
	scope,
	origin: "api",
	reason,
	eventCount: 0,
	lastEventAt: null,
	bulkId: null,
	createdAt: 1_700_000_000,
	updatedAt: 1_700_000_000,
	expiresAt: null,
});

const bytes = (text: string) => new TextEncoder().encode(text).byteLength;

describe("an address's KV value", () => {
	// Reasons of CJK text, which JSON keeps as it is: three bytes of UTF-8 to a character, so a
	// value can be far under the limit in characters and over it in bytes.
	const wide = [
		entry("s0.example.com", "退".repeat(4096)),
		entry("s1.example.com", "退".repeat(2048)),
	];

	it("is measured in bytes of UTF-8, up to exactly the limit", () => {
		const base = renderEdgeValue([...wide, entry("last.example.com", "")]);
		const room = MAX_EDGE_VALUE_BYTES - bytes(base);
		expect(room).toBeGreaterThan(0);
		expect(base.length * 2).toBeLessThan(MAX_EDGE_VALUE_BYTES);
		const full = renderEdgeValue([...wide, entry("last.example.com", "x".repeat(room))]);
		expect(bytes(full)).toBe(MAX_EDGE_VALUE_BYTES);
		expect(JSON.parse(full)).toHaveLength(3);
		const over = renderEdgeValue([...wide, entry("last.example.com", "x".repeat(room + 1))]);
		expect(over).toBe('"d1"');
	});
});
