import type { Issue } from "../errors";
import { isRawJson } from "../json";

/**
 * Limits on an event object, generous for Tencent and bounded for abuse: its fields, the modeled
 * ones included, and the nesting and values of the fields the schema does not model.
 */
export const MAX_FIELDS = 200;
export const MAX_DEPTH = 8;
const MAX_UNMODELED_NODES = 2000;

/**
 * JSON with object keys sorted at every level, so the same event gives the same text however
 * its keys were ordered on the wire.
 *
 * @example
 * canonicalJson({ b: 1, a: [true, null] }) // '{"a":[true,null],"b":1}'
 */
export function canonicalJson(value: unknown): string {
	if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
	if (value !== null && typeof value === "object" && !isRawJson(value)) {
		const entries = Object.entries(value)
			.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
			.map(([key, child]) => `${JSON.stringify(key)}:${canonicalJson(child)}`);
		return `{${entries.join(",")}}`;
	}
	return JSON.stringify(value);
}

/**
 * The idempotency key of a received event object: the first 128 bits of the SHA-256 of its
 * canonical JSON, in hex. A redelivery of the same event has the same key.
 */
export async function eventKey(received: object): Promise<string> {
	const bytes = encoder.encode(canonicalJson(received));
	const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
	let hex = "";
	for (let i = 0; i < 16; i++) hex += HEX[digest[i] as number];
	return hex;
}

const encoder = new TextEncoder();
const HEX = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, "0"));

/**
 * Problems with the fields of an event object that the schema does not model: too many fields,
 * nesting too deep, or strings that are not well-formed Unicode. Their values are otherwise kept
 * exactly as received.
 */
export function unmodeledProblems(received: object, modeled: ReadonlySet<string>): Issue[] {
	const fields = Object.entries(received);
	if (fields.length > MAX_FIELDS) {
		return [{ path: "", message: `must have at most ${MAX_FIELDS} fields, has ${fields.length}` }];
	}
	const issues: Issue[] = [];
	const budget = { nodes: MAX_UNMODELED_NODES };
	for (const [key, value] of fields) {
		if (!key.isWellFormed())
			issues.push({ path: key, message: "field name must be well-formed Unicode" });
		else if (!modeled.has(key)) {
			const problem = walk(value, 1, budget);
			if (problem) issues.push({ path: key, message: problem });
		}
	}
	return issues;
}

function walk(value: unknown, depth: number, budget: { nodes: number }): string | null {
	budget.nodes -= 1;
	if (budget.nodes < 0)
		return `must have at most ${MAX_UNMODELED_NODES} values in unmodeled fields`;
	if (typeof value === "string") return value.isWellFormed() ? null : "must be well-formed Unicode";
	if (value === null || typeof value !== "object" || isRawJson(value)) return null;
	if (depth >= MAX_DEPTH) return `must be nested at most ${MAX_DEPTH} levels deep`;
	const children = Array.isArray(value) ? value : Object.entries(value).flat();
	for (const child of children) {
		const problem = walk(child, depth + 1, budget);
		if (problem) return problem;
	}
	return null;
}
