-- Dovecot 2.3 Lua passdb: checks app passwords with apppassd over HTTP,
-- in the auth worker processes, without starting a program per login
-- (deploy/dovecot/apppass-lua.conf loads it; see that file).
--
-- It asks apppassd's GET /auth/basic, the endpoint nginx's auth_request
-- uses: the login and password as HTTP Basic credentials, the protocol
-- (imap, pop3; Dovecot's "submission" counts as smtp), the client address
-- and the gateway key. apppassd answers 200 with the login as it knows it
-- and the password's uuid, 401 for any wrong, revoked or other app's
-- password, 429 while the login or address is throttled. Anything else
-- (apppassd down, a refused gateway key) is a temporary failure, never
-- "wrong password". The password is never logged.
--
-- Its settings are ${NAME} placeholders (Dovecot 2.3 passes a Lua passdb
-- no arguments):
--   APPPASS_URL               apppassd's base URL, e.g. http://127.0.0.1:8080
--   APPPASS_GATEWAY_KEY_FILE  the gateway key, readable by Dovecot's auth
--                             worker (user dovecot): /etc/dovecot/apppass-gateway.key
--
--   install -m 0640 -o root -g dovecot /dev/null /etc/dovecot/apppass-gateway.key
--   echo "$GATEWAY_SECRET" > /etc/dovecot/apppass-gateway.key
--   export APPPASS_URL=http://127.0.0.1:8080 APPPASS_GATEWAY_KEY_FILE=/etc/dovecot/apppass-gateway.key
--   envsubst '${APPPASS_URL} ${APPPASS_GATEWAY_KEY_FILE}' \
--     < deploy/dovecot/apppass.lua > /etc/dovecot/apppass.lua

local settings = {
  url = "${APPPASS_URL}",
  key_file = "${APPPASS_GATEWAY_KEY_FILE}",
  -- How long one login waits for apppassd, in milliseconds.
  timeout_msecs = 5000,
}
local gateway_key = nil
local http_client = nil

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    local quad = {}
    for j = 1, 4 do
      local idx = (n >> (6 * (4 - j))) & 63
      quad[j] = b64chars:sub(idx + 1, idx + 1)
    end
    if b == nil then quad[3] = "=" end
    if c == nil then quad[4] = "=" end
    out[#out + 1] = table.concat(quad)
  end
  return table.concat(out)
end

local protocols = { imap = "imap", pop3 = "pop3", submission = "smtp", smtp = "smtp", lmtp = "smtp" }

-- script_init runs when the auth worker loads the script: a key file it
-- cannot read stops the passdb there, with the reason in Dovecot's log.
function script_init()
  local f, err = io.open(settings.key_file, "r")
  if f == nil then
    error("apppass.lua: cannot read the gateway key: " .. err)
  end
  gateway_key = f:read("l")
  f:close()
  if gateway_key == nil or gateway_key == "" then
    error("apppass.lua: " .. settings.key_file .. " is empty")
  end
  return 0
end

local function client()
  if http_client == nil then
    http_client = dovecot.http.client({ request_timeout = settings.timeout_msecs, max_attempts = 1 })
  end
  return http_client
end

-- auth_password_verify is called for every login with a password.
function auth_password_verify(req, password)
  local protocol = protocols[req.service]
  if protocol == nil then
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, "service " .. tostring(req.service) .. " does not take app passwords"
  end
  local request = client():request({ url = settings.url .. "/auth/basic", method = "GET" })
  request:add_header("Authorization", "Basic " .. base64(req.user .. ":" .. password))
  request:add_header("X-AppPass-Gateway-Key", gateway_key)
  request:add_header("X-AppPass-Protocol", protocol)
  if req.remote_ip ~= nil and req.remote_ip ~= "" then
    request:add_header("X-Real-IP", req.remote_ip)
  end
  request:add_header("User-Agent", "dovecot-lua/" .. req.service)
  local response = request:submit()
  local status = response:status()
  if status == 200 then
    return dovecot.auth.PASSDB_RESULT_OK, {
      user = response:header("X-AppPass-Login"),
      apppass_uuid = response:header("X-AppPass-UUID"),
    }
  elseif status == 401 then
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, "app password refused"
  elseif status == 429 then
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, "throttled, retry after " .. response:header("Retry-After") .. " s"
  end
  return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, "apppassd answered " .. status .. " " .. tostring(response:reason())
end

-- Lookups without a password (doveadm, LMTP) are not app-password logins.
function auth_passdb_lookup(req)
  return dovecot.auth.PASSDB_RESULT_USER_UNKNOWN, "apppass checks passwords only"
end
