package sqlite

// Migrations are the schema's migrations, for tests that build a file of
// an earlier version.
var Migrations = migrations

// ApplicationID is the application_id of a store's file.
const ApplicationID = applicationID
