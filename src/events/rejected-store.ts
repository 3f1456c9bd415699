import type { ApiError } from "../errors";

/** The most of a rejected body that is kept: enough to inspect and replay any real callback. */
export const MAX_REJECTED_BODY_BYTES = 64 * 1024;

/** A callback request that was refused, as kept for an operator. */
export interface RejectedCallback {
	receivedAt: number;
	error: ApiError;
	contentType: string | null;
	body: Uint8Array;
	/** Size of the whole body as received, which may exceed what is kept. */
	bodyBytes: number;
}

/**
 * Records a refused callback with its error and the first 64 KiB of its raw bytes.
 * Returns the record's id.
 */
export async function recordRejected(db: D1Database, rejected: RejectedCallback): Promise<string> {
	const id = crypto.randomUUID();
	await db
		.prepare(
			`INSERT INTO rejected_callbacks
			(id, received_at, status, code, message, issues, content_type, body, body_bytes)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		)
		.bind(
			id,
			rejected.receivedAt,
			rejected.error.status,
			rejected.error.code,
			rejected.error.message,
			rejected.error.issues ? JSON.stringify(rejected.error.issues) : null,
			rejected.contentType,
			rejected.body.slice(0, MAX_REJECTED_BODY_BYTES),
			rejected.bodyBytes,
		)
		.run();
	return id;
}
