"""Spark support: typed struct columns from free text, one model call per row.

    from dbstruct.spark import spark_schema, structured_udf

    extract_user = structured_udf(UserExtract, "databricks/databricks-meta-llama-3-3-70b-instruct",
                                  prompt="Extract the user from this text: {text}")
    df.withColumn("user", extract_user("text")).select("id", "user.*")
    spark.udf.register("extract_user", extract_user)
    spark.sql("SELECT id, extract_user(text).name FROM reviews")
    TableCache(spark, table="main.llm.answers").extract(df, extract_user, "text")  # hits free

Works on classic and Spark Connect sessions (Databricks serverless, shared clusters): no
sparkContext, RDD or broadcast is used. Needs ``pip install 'dbstruct[spark]'``.
"""

from __future__ import annotations

from dbstruct.spark._table_cache import TableCache
from dbstruct.spark._udf import StructuredUDF, structured_udf
from dbstruct.spark.struct_types import spark_schema, spark_schema_json

__all__ = ["StructuredUDF", "TableCache", "spark_schema", "spark_schema_json", "structured_udf"]
