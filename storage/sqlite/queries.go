package sqlite

// The queries whose cost could grow with the passwords stored. Each must
// find its rows through an index: plan_test.go asks SQLite for the plan of
// every one of them and fails on a scan.
const (
	selectPasswords = `SELECT ` + passwordColumns + ` FROM passwords `
	qFindByDigest   = selectPasswords + `WHERE digest = ? AND revoked IS NULL`
	qList           = selectPasswords + `WHERE context_id = ? AND user_id = ? AND revoked IS NULL ORDER BY created DESC, uuid`
	qCountActive    = `SELECT count(*) FROM passwords WHERE context_id = ? AND user_id = ? AND revoked IS NULL`
	qListContext    = selectPasswords + `WHERE context_id = ? AND revoked IS NULL LIMIT ?`
	// Two queries, each an index range: SQLite answers the OR of the two,
	// or their UNION, with a scan.
	qExpired     = selectPasswords + `WHERE revoked IS NULL AND expires <= ? LIMIT ?`
	qIdleExpired = selectPasswords + `WHERE revoked IS NULL AND idle_deadline <= ? LIMIT ?`
	qRevokeRow   = selectPasswords + `WHERE uuid = ? AND context_id = ? AND user_id = ? AND revoked IS NULL`
	qLoginRow    = `SELECT last_login, known_ips FROM passwords WHERE uuid = ? AND revoked IS NULL`
	qClaimRow    = `SELECT claim_owner, claim_until FROM passwords WHERE uuid = ?`
	// The lease, if nobody else's runs and something waits.
	qClaim = `UPDATE passwords SET claim_owner = ?2, claim_until = ?3
		WHERE uuid = ?1 AND (claim_owner IS NULL OR claim_owner = ?2 OR claim_until <= ?4)
		AND EXISTS (SELECT 1 FROM outbox WHERE password_uuid = ?1 AND published_at IS NULL) RETURNING 1`
	qForget = `DELETE FROM passwords WHERE uuid = ?1 AND revoked IS NOT NULL
		AND NOT EXISTS (SELECT 1 FROM outbox WHERE password_uuid = ?1)`
	qExport = `SELECT ` + passwordColumns + `, revoked, revoked_reason FROM passwords WHERE uuid > ? ORDER BY uuid LIMIT ?`
	// The pending part of the outbox holds only what waits for NATS:
	// reading it whole is fine.
	qPendingIDs = `SELECT DISTINCT o.password_uuid FROM outbox o
		LEFT JOIN passwords p ON p.uuid = o.password_uuid
		WHERE o.published_at IS NULL AND (p.claim_until IS NULL OR p.claim_until <= ?1 OR p.claim_owner = ?3) LIMIT ?2`
	qPendingOf      = `SELECT event FROM outbox WHERE password_uuid = ? AND published_at IS NULL ORDER BY seq`
	qPendingCount   = `SELECT count(*) FROM outbox WHERE published_at IS NULL`
	qMarkPublished  = `UPDATE outbox SET published_at = ? WHERE event_id = ? AND password_uuid = ? AND published_at IS NULL`
	qPurgePublished = `DELETE FROM outbox WHERE seq IN
		(SELECT seq FROM outbox WHERE published_at < ? ORDER BY published_at LIMIT ?) RETURNING password_uuid`
	qFailures      = `SELECT key, failures, window_start, last_failure FROM login_failures WHERE key IN (SELECT value FROM json_each(?))`
	qPurgeFailures = `DELETE FROM login_failures WHERE last_failure < ?`
	qClaimWebhooks = `UPDATE webhook_deliveries SET lease_until = ?1, lease_token = ?2
		WHERE id IN (SELECT id FROM webhook_deliveries
			WHERE state = 'pending' AND next_attempt <= ?3 AND lease_until <= ?3
			AND endpoint NOT IN (SELECT value FROM json_each(?4))
			ORDER BY next_attempt LIMIT ?5)
		RETURNING ` + deliveryColumns + `, body`
)
