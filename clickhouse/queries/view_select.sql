-- The SELECT of a materialized view, as the engine stored it (used to recompute rollups).
SELECT as_select FROM system.tables WHERE database = currentDatabase() AND name = {view:String}
