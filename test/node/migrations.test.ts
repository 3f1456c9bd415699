import { describe, expect, it } from "vitest";

/**
 * Every migration with the SHA-256 of its text (line endings read as LF, so a Windows checkout
 * agrees). Wrangler applies a migration once, by its name: a file changed after it reached main
 * never reaches the databases that already applied it, so such a change must be a new migration.
 * A new file is added here with its hash, which may change until the file reaches main, never
 * after.
 */
const MIGRATIONS: Record<string, string> = {
	"0001_init.sql": "a8428908cdaa9407a0edeb73235faeebe2e76772ca026def6f84bbd333089951",
	"0002_create_suppressions.sql":
		"80e94f27299fa1e330147598624da08d6f4fd51a938301a4d01801bb98e240e2",
	"0003_create_daily_stats.sql": "d913273b73fd53d79f1b9666cabea457f163ecf154e910eb8972ba9c866d303a",
	"0004_add_rejected_replayed_at.sql":
		"561701800888b1a21b3c3949a1eb241546e2c3412af3bee19d8a743f764ae646",
	"0005_create_edge_pending.sql":
		"e9de8cf04fce80243be526559db0fc33e9a15432472aa5e65f98ae1869d2af06",
	"0006_record_history_at_write_time.sql":
		"9a76c8352910cc70f5f82eba5a3138ca849ef41f66d5e31ba31cfa36e5a8c198",
	"0007_recheck_soft_bounces_after_delivery.sql":
		"80d6663423f3e059b2d5a9b9235f4aa185d0b220e72fea9d235d3dc67f9851e2",
	"0008_roll_up_stats_in_the_cron.sql":
		"bd171efe87dbb92dc642259096ca6216dfb56ebf3f0f1125f0f8ba2cda2b344a",
	"0009_page_bulk_sends_and_rejections_by_index.sql":
		"e8d5ccd30df0ec3e4d142a78dcf52e35e329a3011c9c14f2413a4e1721a78bb0",
	"0010_queue_every_entry_change_for_the_edge_check.sql":
		"35e0f52b0aa94b956b7054d1bfba3a837b6aba337598ab0f65e3175f21a25c31",
	"0011_bound_the_storage_of_refused_callbacks.sql":
		"455a98d5265222e3597ef6bbe37c48058c8105408dd8c1ada392286035d025ba",
	"0012_record_expiry_before_an_entry_comes_back.sql":
		"786d89a2292139cc5da4aa74d09f29d406c0e920973e4d9c339b852435468b21",
	"0013_read_one_sender_domains_stats_by_index.sql":
		"b00761a76cda3ca8ec7d8848c376787a39ccd363519638b10b45ea693cd47d0d",
	"0014_widen_unsubscribes_scoped_to_no_sender_domain.sql":
		"8154a33a713dd582a4303d5bbfe82b83a4d251e25c0f17bd69129b9e1f240cf2",
	"0015_widen_unsubscribes_scoped_to_a_domain_with_specials.sql":
		"a12616b42e8c276fb3a74b9442f634cde2226b7e95631076cb6d95ac0df52fa0",
};

// Every file of migrations/, by its name, as text.
const FILES = Object.fromEntries(
	Object.entries(
		import.meta.glob<string>("../../migrations/*.sql", {
			query: "?raw",
			import: "default",
			eager: true,
		}),
	).map(([path, text]) => [path.slice(path.lastIndexOf("/") + 1), text]),
);

async function hashOf(text: string): Promise<string> {
	const bytes = new TextEncoder().encode(text.replaceAll("\r\n", "\n"));
	const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
	return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

describe("migrations", () => {
	it("are the listed files, none changed since it was released", async () => {
		expect(Object.keys(FILES).sort()).toEqual(Object.keys(MIGRATIONS).sort());
		for (const [name, hash] of Object.entries(MIGRATIONS)) {
			expect({ name, hash: await hashOf(FILES[name] ?? "") }).toEqual({ name, hash });
		}
	});

	it("are numbered 0001 on without a gap, so wrangler applies them in the order written", () => {
		const numbers = Object.keys(MIGRATIONS).map((name) => Number(name.slice(0, 4)));
		expect(numbers).toEqual(numbers.map((_, i) => i + 1));
	});
});
