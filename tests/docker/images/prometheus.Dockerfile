# A stand-in for prom/prometheus, which cannot be pulled here: Debian's Prometheus on the tests'
# debootstrapped Debian 12 base, laid out like the official image (/bin/prometheus, which merged /usr gives, data in
# /prometheus, user nobody, same entrypoint and default command), so that docker-compose.yml runs it
# unchanged. wget: compose's health check calls it, as busybox provides it in the official image.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus wget \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
VOLUME ["/prometheus"]
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
