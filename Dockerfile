# The spanhouse collector. Build: docker build -t spanhouse .
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY spanhouse ./spanhouse
COPY sdk ./sdk
COPY collector ./collector
COPY clickhouse ./clickhouse
# The spool volume's mount point exists and belongs to the user: Docker copies that
# ownership into a new named volume (otherwise root's, and the collector cannot write it).
RUN pip install --no-cache-dir . && useradd --system --create-home spanhouse \
 && install -d -o spanhouse -g spanhouse /var/lib/spanhouse
USER spanhouse
WORKDIR /home/spanhouse
EXPOSE 4317 4318 8080 8124
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["spanhouse"]
CMD ["serve", "--host", "0.0.0.0"]
