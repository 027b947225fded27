-- The short code a person compares between the terminal and the sign-in page (RFC 8628
-- §5.4), and the address the login was started from, shown on the page: a link sent by
-- someone else shows a code no terminal of theirs shows, and a stranger's address.
ALTER TABLE cli_logins ADD COLUMN user_code TEXT;
ALTER TABLE cli_logins ADD COLUMN started_from TEXT;
