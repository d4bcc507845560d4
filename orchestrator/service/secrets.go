package service

// Development defaults of the secrets, set by `make run`.
const (
	devWebhookSecret = "dev-secret-change-me"
	devAdminToken    = "dev-admin-token"
)

// secretMinLength is the length under which a secret is short enough to be worth a warning: 32 characters, the
// hex of 16 random bytes.
const secretMinLength = 32

// weakSecrets returns, for each secret that is short or a development default, a warning naming its variable.
// The development defaults are expected under `make run` (Dev) and only their shortness is not reported then.
// An unset admin token is not reported: without one, nothing can be changed over HTTP at all.
func (c *Config) weakSecrets() []string {
	var warnings []string
	for _, s := range []struct{ name, value, dev string }{
		{"HUGGINGFACE_WEBHOOK_SECRET", c.WebhookSecret, devWebhookSecret},
		{"ORCHESTRATOR_ADMIN_TOKEN", c.AdminToken, devAdminToken},
	} {
		switch {
		case s.value == "":
		case s.value == s.dev:
			if !c.Dev {
				warnings = append(warnings, s.name+" is the development default: anyone who has read the README "+
					"can use it; set a random one, for example `openssl rand -hex 32`")
			}
		case len(s.value) < secretMinLength:
			warnings = append(warnings, s.name+" is shorter than 32 characters: set a random one, "+
				"for example `openssl rand -hex 32`")
		}
	}
	return warnings
}

// warnWeakSecrets logs the warnings of weakSecrets, in a process that serves the web interface.
func (c *Config) warnWeakSecrets() {
	if c.Role == RoleWorker {
		return
	}
	for _, w := range c.weakSecrets() {
		c.Logger.Warn("weak secret: " + w)
	}
}
