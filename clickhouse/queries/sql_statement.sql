-- The one statement in a text, formatted by the engine from the text passed as a value
-- (for the SQL endpoint, which checks and runs what this returns): nothing in the text
-- runs here, and more than one statement, which the embedded engine would run one after
-- the other, is a syntax error. implicit_select off, as on a server (chdb turns it on):
-- text that is not a statement is a syntax error, not a SELECT of it.
SELECT formatQuerySingleLine({sql:String}) AS statement
SETTINGS implicit_select = 0
