-- The schema as create_all made it before migrations (revision 0001), for upgrade tests.
CREATE TABLE request_audit (
	id INTEGER NOT NULL, 
	job_id VARCHAR(255) NOT NULL, 
	workspace_id VARCHAR(64) NOT NULL, 
	user_id VARCHAR(64) NOT NULL, 
	channel_id VARCHAR(64), 
	"trigger" VARCHAR(32) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	input_tokens BIGINT NOT NULL, 
	output_tokens BIGINT NOT NULL, 
	queued_at DATETIME NOT NULL, 
	started_at DATETIME, 
	finished_at DATETIME, 
	wait_ms BIGINT, 
	run_ms BIGINT, 
	error_kind VARCHAR(64), 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	CONSTRAINT pk_request_audit PRIMARY KEY (id), 
	CONSTRAINT ck_request_audit_status CHECK (status IN ('queued', 'active', 'completed', 'failed')), 
	CONSTRAINT uq_request_audit_job_id UNIQUE (job_id)
);

CREATE INDEX ix_request_audit_queued_at ON request_audit (queued_at);

CREATE INDEX ix_request_audit_workspace_id_finished_at ON request_audit (workspace_id, finished_at);

CREATE TABLE slack_bots (
	id INTEGER NOT NULL, 
	client_id VARCHAR(32) NOT NULL, 
	app_id VARCHAR(32) NOT NULL, 
	enterprise_id VARCHAR(32), 
	enterprise_name VARCHAR(200), 
	team_id VARCHAR(32), 
	team_name VARCHAR(200), 
	bot_token VARCHAR(200), 
	bot_id VARCHAR(32), 
	bot_user_id VARCHAR(32), 
	bot_scopes VARCHAR(1000), 
	bot_refresh_token VARCHAR(200), 
	bot_token_expires_at DATETIME, 
	is_enterprise_install BOOLEAN NOT NULL, 
	installed_at DATETIME NOT NULL, 
	CONSTRAINT pk_slack_bots PRIMARY KEY (id)
);

CREATE INDEX slack_bots_idx ON slack_bots (client_id, enterprise_id, team_id, installed_at);

CREATE TABLE slack_installations (
	id INTEGER NOT NULL, 
	client_id VARCHAR(32) NOT NULL, 
	app_id VARCHAR(32) NOT NULL, 
	enterprise_id VARCHAR(32), 
	enterprise_name VARCHAR(200), 
	enterprise_url VARCHAR(200), 
	team_id VARCHAR(32), 
	team_name VARCHAR(200), 
	bot_token VARCHAR(200), 
	bot_id VARCHAR(32), 
	bot_user_id VARCHAR(32), 
	bot_scopes VARCHAR(1000), 
	bot_refresh_token VARCHAR(200), 
	bot_token_expires_at DATETIME, 
	user_id VARCHAR(32) NOT NULL, 
	user_token VARCHAR(200), 
	user_scopes VARCHAR(1000), 
	user_refresh_token VARCHAR(200), 
	user_token_expires_at DATETIME, 
	incoming_webhook_url VARCHAR(200), 
	incoming_webhook_channel VARCHAR(200), 
	incoming_webhook_channel_id VARCHAR(200), 
	incoming_webhook_configuration_url VARCHAR(200), 
	is_enterprise_install BOOLEAN NOT NULL, 
	token_type VARCHAR(32), 
	installed_at DATETIME NOT NULL, 
	CONSTRAINT pk_slack_installations PRIMARY KEY (id)
);

CREATE INDEX slack_installations_idx ON slack_installations (client_id, enterprise_id, team_id, user_id, installed_at);

CREATE TABLE slack_oauth_states (
	id INTEGER NOT NULL, 
	state VARCHAR(200) NOT NULL, 
	expire_at DATETIME NOT NULL, 
	CONSTRAINT pk_slack_oauth_states PRIMARY KEY (id)
);

CREATE UNIQUE INDEX ix_slack_oauth_states_state ON slack_oauth_states (state);

CREATE TABLE workspace_quota (
	workspace_id VARCHAR(64) NOT NULL, 
	daily_tokens BIGINT NOT NULL, 
	updated_at DATETIME NOT NULL, 
	CONSTRAINT pk_workspace_quota PRIMARY KEY (workspace_id), 
	CONSTRAINT ck_workspace_quota_daily_tokens_not_negative CHECK (daily_tokens >= 0)
);
