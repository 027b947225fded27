-- Who counted a request's tokens: the engine (`engine`), or the gateway because an upstream
-- engine reported no usage (`counted` with the engine's tokenizer, `estimated` without).
ALTER TABLE usage_records ADD COLUMN usage_source TEXT NOT NULL DEFAULT 'engine';
