import { describe, expect, it } from "vitest";
import {
	type ImportedEntry,
	JSON_CHUNK_BYTES,
	jsonChunks,
} from "../../src/suppressions/transfer-store";

const entry = (i: number, reason: string): ImportedEntry => ({
	email: `a${i}@example.com`,
	list: "manual",
	scope: "*",
	origin: "api",
	reason,
	expiresAt: null,
});

describe("jsonChunks", () => {
	it("puts every entry once, in order, in parameters of at most 1,000,000 bytes of UTF-8", () => {
		// Three bytes a character: counting characters instead of bytes would overfill a chunk.
		const entries = Array.from({ length: 700 }, (_, i) => entry(i, "測".repeat(1000 + i)));
		const chunks = jsonChunks(entries);
		expect(chunks.length).toBeGreaterThan(2);
		for (const chunk of chunks) {
			expect(new TextEncoder().encode(chunk).byteLength).toBeLessThanOrEqual(JSON_CHUNK_BYTES);
		}
		// Full chunks are not wasted: each but the last holds all it can.
		for (const [i, chunk] of chunks.slice(0, -1).entries()) {
			const next = JSON.stringify(JSON.parse(chunks[i + 1] as string)[0]);
			const size = new TextEncoder().encode(`${chunk.slice(0, -1)},${next}]`).byteLength;
			expect(size).toBeGreaterThan(JSON_CHUNK_BYTES);
		}
		expect(chunks.flatMap((chunk) => JSON.parse(chunk))).toEqual(
			JSON.parse(JSON.stringify(entries)),
		);
	});

	it("keeps two entries of 999,999 or exactly 1,000,000 bytes together and splits two of 1,000,001", () => {
		const base = `[${JSON.stringify(entry(1, "x"))},${JSON.stringify(entry(2, ""))}]`;
		const sizes = (total: number) =>
			jsonChunks([entry(1, "x"), entry(2, "y".repeat(total - base.length))]).map(
				(chunk) => new TextEncoder().encode(chunk).byteLength,
			);
		expect(sizes(999_999)).toEqual([999_999]);
		expect(sizes(JSON_CHUNK_BYTES)).toEqual([JSON_CHUNK_BYTES]);
		expect(sizes(1_000_001)).toHaveLength(2);
	});

	it("makes no statement for no entries, and one for a few", () => {
		expect(jsonChunks([])).toEqual([]);
		expect(jsonChunks([entry(1, "r")])).toHaveLength(1);
	});
});
