type Level = "info" | "warn" | "error";

/**
 * Writes one JSON object per line, which Workers Logs indexes field by field.
 * Never pass secrets or callback URLs here: the callback path contains a secret.
 *
 * @example
 * log("warn", "edge write failed", { requestId, failed: 3, error: String(error) });
 */
export function log(level: Level, message: string, fields: Record<string, unknown> = {}): void {
	const line = JSON.stringify({ level, message, time: new Date().toISOString(), ...fields });
	if (level === "error") console.error(line);
	else if (level === "warn") console.warn(line);
	else console.log(line);
}
